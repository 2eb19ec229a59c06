"""MELP on the shared PTB-XL subset: zero-shot superdiagnostic macro AUC, ECG<->report recall@k, and the
linear-probe AUC of the MELP ECG encoder vs ECG-JEPA vs random init (same encoder spec, same probe,
same split: pretrain / probe-train folds 1-5, test folds 6-7).

    .venv/bin/python benchmarks/ecg_text_melp_ptbxl.py --steps 400 --jepa-steps 400 --out runs/bench_melp

Both pretrainings use one small encoder spec (vit1d, patch 25 = 0.25 s at 100 Hz, dim 64, depth 2; the
ECG engineer's JEPA yaml uses patch 5, dim 96, depth 4, too slow for a shared CPU). The probe is the ecg modality's (experiments/ecg/jepa_ptbxl_shared.yaml: 2.5 s crops every 1.25 s,
averaged; logistic regression C=0.1) so the three encoders are compared exactly as ECG-JEPA is.
Prints a JSON summary and writes it to ``<out>/summary.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ENCODER = ["encoder.patch_size=25", "encoder.dim=64", "encoder.depth=2", "encoder.heads=4"]
# the hand-written prompt set used before the training-report-derived default (kept for comparison only)
PREVIOUS_PROMPTS = {
    "NORM": ["normal ecg", "sinus rhythm, normal ecg", "normales ekg", "sinusrhythmus normales ekg"],
    "MI": ["myocardial infarction", "old inferior infarction", "anterior infarction", "infarkt", "myokardinfarkt"],
    "STTC": ["st-t changes", "st segment depression", "t wave inversion", "st-t veränderungen", "st-senkung",
             "ischämische st-t veränderungen"],
    "CD": ["conduction disturbance", "bundle branch block", "left anterior fascicular block", "av block",
           "linksschenkelblock", "rechtsschenkelblock"],
    "HYP": ["left ventricular hypertrophy", "hypertrophy", "linkshypertrophie", "linksventrikuläre hypertrophie"],
}
SPLIT = ["data.pretrain_folds=[1,2,3,4,5]", "data.probe_train_folds=[1,2,3,4,5]", "data.probe_test_folds=[6,7]"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/ecg/ptbxl")
    ap.add_argument("--out", default="runs/bench_melp")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--jepa-steps", type=int, default=400, help="0: skip the JEPA comparison")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from sslab.core.config import load_experiment
    from sslab.core.export import build_encoder, load_encoder
    from sslab.core.modality import build_modality
    from sslab.eval.zeroshot import evaluate, format_zero_shot
    from sslab.modalities.ecg_text import load_melp
    from sslab.run import probe_encoders, pretrain, seed_everything

    out = Path(args.out)
    common = [f"output_dir={out}", f"data.path={args.data}", "train.progress=false"]
    summary = {"steps": args.steps, "jepa_steps": args.jepa_steps}

    # 1. MELP pretraining on ECG-report pairs of folds 1-5 (small towers)
    cfg = load_experiment("experiments/ecg_text/melp.yaml", common + ENCODER + SPLIT + [
        f"train.steps={args.steps}", f"train.batch_size={args.batch_size}", "train.num_workers=0",
        "train.ckpt_every=0", "train.log_every=10", "optim.warmup_steps=40", "optim.lr=0.0005",
        "data.vocab_size=1000", "objective.embed_dim=128", "objective.num_queries=8",
        "objective.text.dim=128", "objective.text.depth=2", "objective.text.heads=4",
        "objective.decoder.dim=128", "objective.decoder.depth=1", "objective.mlm.steps=50",
        "objective.mlm.batch_size=32"])
    t0 = time.time()
    run = pretrain(cfg)
    summary["melp_train_s"] = round(time.time() - t0, 1)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss_token" in r]
    summary["melp_losses_first_last"] = {k: [round(rows[0][k], 3), round(rows[-1][k], 3)]
                                         for k in ("loss_token", "loss_beat", "loss_rhythm", "loss")}

    # 2. zero-shot + retrieval on folds 6-7 (MELP run vs the same towers at random init)
    modality, objective = load_melp(run)
    zs = evaluate(objective, modality, bootstrap=1000)
    summary["melp_zero_shot"] = zs
    print(format_zero_shot(zs))
    default_prompts = dict(modality.data.zero_shot.prompts)
    modality.data.zero_shot.prompts = PREVIOUS_PROMPTS  # comparison only; the default is not chosen on the test
    summary["melp_zero_shot_previous_prompts"] = evaluate(objective, modality, bootstrap=1000)["zero_shot"]
    modality.data.zero_shot.prompts = default_prompts
    seed_everything(cfg.seed)
    rand = modality.build_objective(modality.build_encoder())
    summary["random_init_zero_shot"] = evaluate(rand, modality, bootstrap=1000)

    # 3. JEPA on the same records, same encoder spec
    encoders = {"melp": load_encoder(run)}
    if args.jepa_steps > 0:
        jcfg = load_experiment("experiments/ecg/jepa_ptbxl_shared.yaml", common + ENCODER + SPLIT + [
            f"train.steps={args.jepa_steps}", f"train.batch_size={max(args.batch_size, 32)}",
            f"optim.warmup_steps={max(10, args.jepa_steps // 10)}"])
        t0 = time.time()
        jrun = pretrain(jcfg)
        summary["jepa_train_s"] = round(time.time() - t0, 1)
        encoders["jepa"] = load_encoder(jrun)
    seed_everything(cfg.seed)
    encoders["random_init"] = build_encoder(encoders["melp"].sslab_spec)

    # 4. identical linear probe (the ecg modality's, superdiagnostic, folds 1-5 -> 6-7)
    pcfg = load_experiment("experiments/ecg/jepa_ptbxl_shared.yaml", common + ENCODER + SPLIT)
    ecg_modality = build_modality(pcfg)
    probe_rows = probe_encoders(ecg_modality, encoders, pcfg, progress=False)
    summary["linear_probe"] = {r["encoder"]: {k: r[k] for k in r if k in ("macro_auc", "label_fraction")}
                               for r in probe_rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if "zero_shot" not in k}, indent=2))
    print("previous hand-written prompts: " + json.dumps(summary["melp_zero_shot_previous_prompts"]))
    print("random-init towers:\n" + format_zero_shot(summary["random_init_zero_shot"]))


if __name__ == "__main__":
    main()
