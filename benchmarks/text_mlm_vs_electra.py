"""MLM (15%, 30%) vs ELECTRA (+GDES) on the PTB-XL report corpus at equal training compute.

Compute is matched in FLOPs: one optimizer step of each objective is measured with
``torch.utils.flop_counter.FlopCounterMode`` on a real batch, and every method gets
``round(base_steps * flops(mlm15) / flops(method))`` steps. Each run is probed (linear probe and kNN
on frozen mean-pooled features; report -> diagnostic superclass, PTB-XL folds 6-7 held out) beside the
same encoder at random init, and — because that test split has only 77 reports — also by a
leave-one-fold-out linear probe over all 7 PTB-XL folds of the shared subset (307 labelled reports,
every report predicted once; ``cv_*`` columns).

    .venv/bin/python benchmarks/text_mlm_vs_electra.py --base-steps 300 --seeds 0 1 2

The paired many-seed measurement (repeated stratified CV, label fractions, pooling) is
``benchmarks/text_probe_seeds.py``; this script's 3-seed numbers are within its noise.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

EXPERIMENTS = {
    "mlm15": "experiments/text/mlm_ptbxl.yaml",
    "mlm30": "experiments/text/mlm30_ptbxl.yaml",
    "electra_gdes": "experiments/text/electra_gdes_ptbxl.yaml",
    "electra_shared": "experiments/text/electra_gdes_ptbxl.yaml",
}
EXTRA = {"electra_shared": ["objective.embedding_sharing=shared"]}


def cv_probe(run: Path) -> dict:
    """Leave-one-strat-fold-out linear probe of the exported encoder and of its random init."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sslab import load_encoder
    from sslab.core.config import load_experiment
    from sslab.core.export import build_encoder
    from sslab.core.modality import build_modality
    from sslab.datasets.text import ptbxl_fold, ptbxl_reports
    from sslab.modalities.text import collate_labeled

    cfg = load_experiment(run / "config.yaml")
    modality = build_modality(cfg)
    tok = modality.tokenizer()
    docs = [d for d in ptbxl_reports(Path(modality.data.shared_data) / "ecg" / "ptbxl") if d.label]
    classes = sorted({d.label for d in docs})
    y = np.array([classes.index(d.label) for d in docs])
    folds = np.array([ptbxl_fold(d) for d in docs])
    max_len = int(cfg.data.get("max_len", 64))
    # the modality's probe encoding: [CLS] text [SEP], cut to max_len keeping the final [SEP]
    items = [({"input_ids": ids[: max_len - 1] + [ids[-1]] if len(ids) > max_len else ids}, 0)
             for ids in (tok(d.text)["input_ids"] for d in docs)]
    pretrained = load_encoder(run)
    torch.manual_seed(cfg.seed)
    encoders = {"pretrained": pretrained, "random_init": build_encoder(pretrained.sslab_spec)}
    out = {}
    for name, enc in encoders.items():
        enc.eval()
        with torch.no_grad():
            X = torch.cat([modality.embed(enc, collate_labeled(items[i:i + 64])[0])
                           for i in range(0, len(items), 64)]).numpy()
        pred = np.zeros_like(y)
        for f in np.unique(folds):
            tr, te = folds != f, folds == f
            model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
            model.fit(X[tr], y[tr])
            pred[te] = model.predict(X[te])
        out[f"{name}_cv_accuracy"] = round(float(accuracy_score(y, pred)), 4)
        out[f"{name}_cv_macro_f1"] = round(float(f1_score(y, pred, average="macro")), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--methods", nargs="+", default=list(EXPERIMENTS))
    ap.add_argument("--shared-data", default="../shared/data")
    ap.add_argument("--out", default="runs/text_bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for every run "
                    "(e.g. encoder.dim=64 encoder.depth=2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sslab.core.config import load_experiment
    from sslab.core.flops import training_step_flops
    from sslab.run import pretrain, probe

    def cfg_for(method: str, seed: int, steps: int):  # type: ignore[no-untyped-def]
        return load_experiment(EXPERIMENTS[method], [
            f"name={method}_s{seed}", f"seed={seed}", f"output_dir={args.out}", f"train.steps={steps}",
            f"data.shared_data={args.shared_data}", "train.progress=false", *args.set, *EXTRA.get(method, [])])

    flops = {m: training_step_flops(cfg_for(m, 0, 1)) for m in args.methods}
    ref = flops.get("mlm15", next(iter(flops.values())))
    steps = {m: max(1, round(args.base_steps * ref / f)) for m, f in flops.items()}
    print("GFLOPs per step:", {m: round(f / 1e9, 3) for m, f in flops.items()})
    print("steps at equal compute:", steps)
    results = []
    for seed in args.seeds:
        for m in args.methods:
            cfg = cfg_for(m, seed, steps[m])
            t = time.time()
            run = pretrain(cfg)
            secs = time.time() - t
            lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
            losses = [l["loss"] for l in lines if "loss" in l]
            rows = probe(run, progress=False)["rows"]
            by = {r["encoder"]: r for r in rows}
            res = {"method": m, "seed": seed, "steps": steps[m], "train_s": round(secs, 1),
                   "loss_first": round(losses[0], 3), "loss_last": round(losses[-1], 3)}
            for enc in ("pretrained", "random_init"):
                for k in ("accuracy", "macro_f1", "knn_accuracy"):
                    res[f"{enc}_{k}"] = round(by[enc][k], 4)
            res.update(cv_probe(run))
            print(json.dumps(res), flush=True)
            results.append(res)
    print("\nmean over seeds: held-out folds 6-7 (acc / macro-F1 / kNN acc) and 7-fold CV (acc / macro-F1)")
    for m in args.methods:
        rs = [r for r in results if r["method"] == m]

        def mean(k: str) -> str:
            v = [r[k] for r in rs]
            return f"{statistics.mean(v):.3f}" + (f"±{statistics.stdev(v):.3f}" if len(v) > 1 else "")

        for enc in ("pretrained", "random_init"):
            print(f"{m:15s} steps={steps[m]:4d} {enc:11s} acc {mean(enc + '_accuracy')} f1 {mean(enc + '_macro_f1')} "
                  f"knn {mean(enc + '_knn_accuracy')} | cv acc {mean(enc + '_cv_accuracy')} "
                  f"cv f1 {mean(enc + '_cv_macro_f1')}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "mlm_vs_electra.json").write_text(json.dumps({"flops": flops, "steps": steps, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
