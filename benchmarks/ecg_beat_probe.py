"""Beat-level AAMI probe (N/S/V/F/Q) on MIT-BIH style records: pretrained ECG encoder vs random init.

Usage (after ``sslab demo --output-dir /tmp/x data.crop_seconds=2.5 encoder.patch_size=5``, the demo encoder that
docs/ecg.md measured, or any ECG run whose ``patch_size`` divides the beat window: 0.7 s = 70 samples at 100 Hz;
the current demo's 20-sample patches do not, and vit1d says so)::

    python benchmarks/ecg_beat_probe.py /tmp/x/demo --path ../shared/data/ecg/mitdb
    python benchmarks/ecg_beat_probe.py /tmp/x/demo --path ../shared/data/ecg/svdb --channel-leads II V1

Uses ``ECGModality.beat_probe_task`` (``data.beat_probe``: windows resampled to the run's ``data.fs``, leads
placed by name, zero-filled otherwise; time split unless ``--test-records``) and the core probe
(``sslab.run.probe_encoders``: logistic regression on mean-pooled tokens + kNN).  Prints per-class counts,
the majority-class baseline, the probe rows, and per-class recall of the same linear model
(StandardScaler + LogisticRegression(C), refitted here because the core probe returns only aggregates).
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--path", required=True, help="folder of records with .atr annotations")
    ap.add_argument("--records", nargs="*", default=[])
    ap.add_argument("--test-records", nargs="*", default=[])
    ap.add_argument("--channel-leads", nargs="*", default=[], help="positional lead names (e.g. II V1)")
    ap.add_argument("--train-fraction", type=float, default=0.7)
    ap.add_argument("--one-split-classes", default="exclude", choices=["error", "exclude"])
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()

    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, recall_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sslab.core.config import load_experiment
    from sslab.core.export import build_encoder, load_encoder
    from sslab.core.modality import build_modality
    from sslab.datasets.ecg_mitbih import AAMI_CLASSES
    from sslab.eval.probe import extract_features, format_table
    from sslab.run import probe_encoders, seed_everything

    torch.set_num_threads(1)
    run = Path(args.run_dir)
    cfg = load_experiment(run / "config.yaml")
    cfg.data = copy.deepcopy(dict(cfg.data))
    cfg.data["beat_probe"] = {"path": args.path, "records": args.records, "test_records": args.test_records,
                              "channel_leads": args.channel_leads, "train_fraction": args.train_fraction,
                              "one_split_classes": args.one_split_classes}
    modality = build_modality(cfg)
    task = modality.beat_probe_task()
    data = modality.beat_data
    ctr, cte = data.counts("train"), data.counts("test")
    print(f"{task.name}: leads {data.lead_sources} (others zero-filled); excluded {data.excluded}; "
          f"skipped {data.skipped}")
    print("| split | " + " | ".join(AAMI_CLASSES) + " |\n|---|" + "---|" * len(AAMI_CLASSES))
    for name, c in (("train", ctr), ("test", cte)):
        print(f"| {name} | " + " | ".join(str(c[k]) for k in AAMI_CLASSES) + " |")
    yte = task.test.y
    maj = int(np.bincount(task.train.y).argmax())
    print(f"majority class ({AAMI_CLASSES[maj]}) baseline: accuracy {np.mean(yte == maj):.4f}, "
          f"macro-F1 {f1_score(yte, np.full_like(yte, maj), average='macro'):.4f}\n")

    encoder = load_encoder(run)
    seed_everything(cfg.seed)
    encoders = {"pretrained": encoder, "random_init": build_encoder(encoder.sslab_spec)}
    rows = probe_encoders(modality, encoders, cfg, tasks=[task], progress=False)
    print(format_table(rows))
    present = sorted(set(task.train.y.tolist()) | set(yte.tolist()))
    print("\nper-class recall (same linear model):")
    for name, enc in encoders.items():
        enc.eval()
        emb = lambda x, _e=enc: modality.embed(_e, x)  # noqa: E731
        Xtr, ytr = extract_features(emb, task.train, None, torch.device("cpu"), 256, False)
        Xte, yte2 = extract_features(emb, task.test, None, torch.device("cpu"), 256, False)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.probe.C, max_iter=cfg.probe.max_iter))
        model.fit(np.asarray(Xtr, np.float64), ytr)
        rec = recall_score(yte2, model.predict(np.asarray(Xte, np.float64)), labels=present, average=None,
                           zero_division=0)
        print(f"  {name}: " + ", ".join(f"{AAMI_CLASSES[c]} {r:.3f}" for c, r in zip(present, rec)))
        for row in rows:
            if row["encoder"] == name:
                row["recall"] = {AAMI_CLASSES[c]: float(r) for c, r in zip(present, rec)}
    if args.out:
        Path(args.out).write_text(json.dumps({"train_counts": ctr, "test_counts": cte, "excluded": data.excluded,
                                              "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
