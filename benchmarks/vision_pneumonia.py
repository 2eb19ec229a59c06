"""PneumoniaMNIST (shared subset): kNN / linear-probe accuracy of SiT, POA (every extracted size) and
random init. Prints one table. CPU, ~10-20 minutes on 2 busy cores with the defaults below.

    OMP_NUM_THREADS=1 python benchmarks/vision_pneumonia.py --out /tmp/vision_pneumonia [--steps 300]

Uses experiments/vision/{sit,poa}.yaml as committed (ViT 64 wide, 4 deep, patch 4; 300 steps of batch 32,
~4 epochs of the 2,428 training images); the test split (468 images) is the probe test set. ``--seed``
changes initialisation, data order, crops and masks (the random-init baseline follows the seed too).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/vision_pneumonia")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-train", action="store_true", help="only re-probe existing runs in --out")
    args = ap.parse_args()

    from sslab.core.config import load_experiment
    from sslab.modalities.vision import probe_sizes
    from sslab.run import pretrain, probe

    common = ["encoder.embed_dim=64", "encoder.depth=4", "encoder.num_heads=4", f"train.steps={args.steps}",
              f"train.batch_size={args.batch}", "train.log_every=20", "optim.warmup_steps=30",
              f"output_dir={args.out}", "train.progress=false", f"seed={args.seed}"]
    sit_cfg = load_experiment(ROOT / "experiments/vision/sit.yaml", common)
    poa_cfg = load_experiment(ROOT / "experiments/vision/poa.yaml",
                              common + ["objective.widths=[16,32,48,64]", "objective.depths=[2,3,4]"])
    runs = {}
    for name, cfg in (("sit", sit_cfg), ("poa", poa_cfg)):
        runs[name] = cfg.run_dir if args.skip_train else pretrain(cfg)
    sit = probe(runs["sit"], cfg=sit_cfg, progress=False)["rows"]
    poa = probe_sizes(runs["poa"], sizes=[(w, d) for w in (16, 32, 48, 64) for d in (2, 3, 4)], cfg=poa_cfg,
                      progress=False)["rows"]
    print("| method | size (width x depth) | params | init | linear acc | kNN acc |")
    print("|---|---|---|---|---|---|")
    for r in sit:
        print(f"| SiT | 64 x 4 | - | {r['encoder']} | {r['accuracy']:.4f} | {r['knn_accuracy']:.4f} |")
    for r in poa:
        print(f"| POA | {r['width']} x {r['depth']} | {r['num_params']} | {r['init']} | {r['accuracy']:.4f} | "
              f"{r['knn_accuracy']:.4f} |")
    Path(args.out, "summary.json").write_text(json.dumps({"sit": sit, "poa": poa}, indent=2))


if __name__ == "__main__":
    main()
