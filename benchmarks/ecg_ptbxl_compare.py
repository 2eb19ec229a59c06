"""PTB-XL probe side by side: JEPA-pretrained vs the same encoder at random init vs hand-crafted features.

Usage (after ``sslab pretrain experiments/ecg/jepa_ptbxl_shared.yaml``)::

    python benchmarks/ecg_ptbxl_compare.py runs/ecg_jepa_ptbxl_shared [--C 0.1] [key=value overrides]

The learned encoders use the run's probe tasks (``sslab.run.probe``: crop-averaged mean-pooled tokens,
logistic regression); the baseline uses neurokit2 features (``sslab.eval.ecg_baseline``) on the same
train/test records with the same C.  Prints one markdown table and writes ``compare.json`` in the run.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--C", type=float, default=None, help="probe C (default: the run's probe.C)")
    args = ap.parse_args()

    from sslab.core.config import load_experiment
    from sslab.datasets.ecg_wfdb import read_record
    from sslab.eval.ecg_baseline import baseline_probe, extract
    from sslab.modalities.ecg import ECGModality
    from sslab.run import probe

    run = Path(args.run_dir)
    overrides = list(args.overrides) + ([f"probe.C={args.C}"] if args.C is not None else [])
    cfg = load_experiment(run / "config.yaml", overrides)
    t = time.perf_counter()
    res = probe(run, cfg=cfg, progress=False)
    rows = [{"method": r["encoder"], "macro_auc": r["macro_auc"]} for r in res["rows"] if "macro_auc" in r]
    t_learned = time.perf_counter() - t

    mod = ECGModality(cfg)
    px = mod.ptbxl()
    tr, te = px.split(mod.data.probe_train_folds), px.split(mod.data.probe_test_folds)
    t = time.perf_counter()
    leads = mod.data.leads
    Xtr = extract((read_record(r, leads, mod.data.fs).signal for r in tr.records), mod.data.fs, progress=True)
    Xte = extract((read_record(r, leads, mod.data.fs).signal for r in te.records), mod.data.fs, progress=True)
    base = baseline_probe(Xtr, tr.labels, Xte, te.labels, "multilabel", C=cfg.probe.C)
    rows.append({"method": "handcrafted_neurokit2", "macro_auc": base["macro_auc"],
                 "failed_records": base["train_records_failed"] + base["test_records_failed"]})
    t_base = time.perf_counter() - t

    print(f"\nPTB-XL {mod.data.label_set}: train folds {mod.data.probe_train_folds} ({len(tr.records)} records), "
          f"test folds {mod.data.probe_test_folds} ({len(te.records)}), C={cfg.probe.C}")
    print("| method | macro AUC |\n|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['macro_auc']:.4f} |")
    print(f"\n(learned probes {t_learned:.0f} s, neurokit2 features {t_base:.0f} s; "
          f"positives in test: {dict(zip(px.classes, te.labels.sum(0).astype(int).tolist()))})")
    (run / "compare.json").write_text(json.dumps({"rows": rows, "C": cfg.probe.C}, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
