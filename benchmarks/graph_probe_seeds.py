"""TU linear probe (MUTAG, PROTEINS, IMDB-BINARY), pretrained vs random init, per objective, over several pretraining seeds and probe features.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/graph_probe_seeds.py --seeds 1 2 3 --steps 200 \
        [--dataset MUTAG|PROTEINS|IMDB-BINARY] [--objectives graph_attr_mask graphcl graph_edge_pred] \
        [--pretrain-source MUTAG|nci] \
        [--node-features atoms+degree] [--features mean/last mean/all sum/all] [--bn running recompute] \
        [--C 1.0 cv] [--baseline-only] [--out runs/graph_probe_seeds]

For each objective and seed s: pretrain the experiment ``experiments/graph/mutag_<objective>.yaml`` (GIN 5 x 300,
atom type + degree features) through the core Trainer with ``seed=s`` (``--pretrain-source`` swaps the
pretraining graphs, the probe stays on ``--probe-source``; ``--node-features atoms+degree`` is the input
space MUTAG and NCI share); build the same encoder at random init under the same seed (what the core probe
does); run the core linear probe (standardise + logistic regression, C = 1; ``--C cv`` picks C by inner CV on
the training fold) with 10-fold stratified CV whose folds are also drawn with seed s. Each seed therefore
changes pretraining init, data order, masks/augmentations, the random-init encoder *and* the folds.

``--dataset PROTEINS|IMDB-BINARY`` pretrains on that set's own graphs (labels unused: the transductive unsupervised
setting of GraphCL/InfoGraph) and probes the same set, with the node features the repo configures for it
(PROTEINS: one-hot node label + degree capped at 16; IMDB-BINARY, no node labels: one-hot degree capped at 32);
GIN and objective settings stay those of the MUTAG experiment files.

Probe features (``--features pool/layers``): ``mean/last`` is the project default (mean-pooled last layer);
``*/all`` concatenates the pooled output of every layer (InfoGraph/GraphCL linear evaluation).
``--bn running`` embeds with BatchNorm running statistics (eval mode, the default everywhere);
``--bn recompute`` first re-estimates them on the fold's *training* graphs (no labels; test graphs unused).
Also printed: the no-GNN baseline (probe on mean+sum pooled input features) on the same folds.

Prints per (objective, feature, bn, C): pretrained and random init accuracy as mean ± std over seeds of the
10-fold mean, the number of seeds where pretrained wins, the (seed, fold) pairs where it is better / tied / worse,
and writes DIR/results.json. Results: docs/graph.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = {"graph_attr_mask": "mutag_attr_mask.yaml", "graphcl": "mutag_graphcl.yaml",
              "graph_edge_pred": "mutag_edge_pred.yaml"}
# --dataset presets: pretraining = probe source (transductive: pretrain on the downstream set's graphs, labels
# unused), and the node features the repo configures for that set (experiments/graph/*.yaml).
DATASETS: Dict[str, Dict[str, Any]] = {
    "MUTAG": {"node_features": "", "max_degree": None},  # the experiment files' node_labels+degree, cap 4
    "PROTEINS": {"node_features": "node_labels+degree", "max_degree": 16},  # as proteins_graphcl.yaml
    "IMDB-BINARY": {"node_features": "degree", "max_degree": 32},  # no node labels; as imdb_graphcl.yaml
}


def apply_dataset(args: argparse.Namespace) -> None:
    """Fill pretrain/probe source and node features from ``--dataset`` where not given explicitly."""
    if not args.dataset:
        args.pretrain_source = args.pretrain_source or "MUTAG"
        args.probe_source = args.probe_source or "MUTAG"
        return
    preset = DATASETS[args.dataset]
    args.pretrain_source = args.pretrain_source or args.dataset
    args.probe_source = args.probe_source or args.dataset
    if not args.node_features:
        args.node_features = preset["node_features"]
    if args.max_degree is None:
        args.max_degree = preset["max_degree"]


@torch.no_grad()
def recompute_batchnorm(encoder: nn.Module, dataset, collate, batch_size: int = 64) -> nn.Module:
    """A copy of ``encoder`` whose BatchNorm running statistics are the exact averages over ``dataset``."""
    enc = copy.deepcopy(encoder)
    norms = [m for m in enc.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = exact mean over the batches
    enc.train()
    for batch, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
        enc(batch)
    return enc.eval()


@torch.no_grad()
def features(encoder: nn.Module, dataset, collate, pooling: str, layers: str) -> tuple[np.ndarray, np.ndarray]:
    from sslab.eval.probe import extract_features
    from sslab.modalities.graph import graph_embedding

    encoder.eval()
    return extract_features(lambda b: graph_embedding(encoder, b, pooling, layers), dataset, collate)


def probe_accuracy(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray, C: str, seed: int,
                   max_iter: int) -> float:
    """Core linear probe (standardise + logistic regression) with a fixed ``C``, or ``C="cv"``: C picked from
    10^-3..10^3 by an inner stratified 5-fold CV on the *training* fold only (the SVM/LogReg protocol of the
    graph-SSL linear evaluations, e.g. InfoGraph / GraphCL); the test fold is never used to choose."""
    from sslab.eval.probe import linear_probe

    if C != "cv":
        return linear_probe(Xtr, ytr, Xte, yte, "multiclass", C=float(C), max_iter=max_iter, seed=seed)["accuracy"]
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    grid = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter)),
                        {"logisticregression__C": [10.0 ** k for k in range(-3, 4)]},
                        cv=StratifiedKFold(5, shuffle=True, random_state=seed), scoring="accuracy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid.fit(Xtr, ytr)
    return float((grid.predict(Xte) == yte).mean())


def _overrides(objective: str, seed: int, args: argparse.Namespace, workdir: Path) -> List[str]:
    overrides = [f"seed={seed}", f"train.steps={args.steps}", f"output_dir={workdir}",
                 f"name={objective}_s{seed}", "train.progress=false", f"data.source={args.pretrain_source}",
                 f"data.probe_source={args.probe_source}", f"data.probe_folds={args.folds}"]
    if args.tu_root:
        overrides.append(f"data.tu_root={args.tu_root}")
    if args.max_degree is not None:
        overrides.append(f"data.max_degree={args.max_degree}")
    if args.node_features:
        overrides.append(f"data.features={args.node_features}")
    return overrides + args.override


def input_baseline(seed: int, args: argparse.Namespace, workdir: Path) -> Dict[str, Any]:
    """No GNN at all: the probe on [mean, sum] of the raw node features (element and degree histograms)."""
    from sslab.core.config import load_experiment
    from sslab.core.modality import build_modality

    cfg = load_experiment(ROOT / "experiments" / "graph" / EXPERIMENT["graph_attr_mask"],
                          _overrides("graph_attr_mask", seed, args, workdir))
    tasks = build_modality(cfg).probe_tasks()
    full, collate = tasks[0].train.dataset, tasks[0].collate_fn
    from sslab.eval.probe import extract_features
    from torch_geometric.nn import global_add_pool, global_mean_pool

    X, y = extract_features(lambda b: torch.cat([global_mean_pool(b.x.float(), b.batch, b.num_graphs),
                                                 global_add_pool(b.x.float(), b.batch, b.num_graphs)], 1),
                            full, collate)
    accs = [probe_accuracy(X[t.train.indices], y[t.train.indices], X[t.test.indices], y[t.test.indices], "1.0",
                           cfg.seed, cfg.probe.max_iter) for t in tasks]
    return {"seed": seed, "acc_mean": float(np.mean(accs)), "fold_acc": accs}


def run_one(objective: str, seed: int, args: argparse.Namespace, workdir: Path) -> List[Dict[str, Any]]:
    from sslab.core.config import load_experiment
    from sslab.core.export import build_encoder, load_encoder
    from sslab.core.modality import build_modality
    from sslab.run import pretrain, seed_everything

    overrides = _overrides(objective, seed, args, workdir)
    cfg = load_experiment(ROOT / "experiments" / "graph" / EXPERIMENT[objective], overrides)
    t0 = time.time()
    run = pretrain(cfg)
    t_pre = time.time() - t0
    logs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logs if "loss" in r]
    pre = load_encoder(run)
    seed_everything(cfg.seed)  # the same init the pretraining run started from (as sslab.run.probe)
    rnd = build_encoder(pre.sslab_spec)
    modality = build_modality(cfg)
    tasks = modality.probe_tasks()
    full = tasks[0].train.dataset  # every probe graph, with labels
    collate = tasks[0].collate_fn
    rows: List[Dict[str, Any]] = []
    for feat in args.features:
        pooling, layers = feat.split("/")
        for bn in args.bn:
            for enc_name, enc in (("pretrained", pre), ("random_init", rnd)):
                accs: Dict[str, List[float]] = {c: [] for c in args.C}
                if bn == "running":
                    X, y = features(enc, full, collate, pooling, layers)
                for task in tasks:
                    tr, te = task.train.indices, task.test.indices
                    if bn == "running":
                        Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]
                    else:
                        e = recompute_batchnorm(enc, task.train, collate)
                        Xtr, ytr = features(e, task.train, collate, pooling, layers)
                        Xte, yte = features(e, task.test, collate, pooling, layers)
                    for c in args.C:
                        accs[c].append(probe_accuracy(Xtr, ytr, Xte, yte, c, cfg.seed, cfg.probe.max_iter))
                for c in args.C:
                    rows.append({"objective": objective, "seed": seed, "feature": feat, "bn": bn, "C": c,
                                 "encoder": enc_name, "acc_mean": float(np.mean(accs[c])),
                                 "acc_fold_std": float(np.std(accs[c])), "fold_acc": accs[c],
                                 "loss_first": losses[0], "loss_last": losses[-1], "losses": losses, "pretrain_s": t_pre,
                                 "pretrain_source": args.pretrain_source})
    return rows


def summarize(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    keys = sorted({(r["objective"], r["feature"], r["bn"], r.get("C", "1.0")) for r in rows}, key=str)
    for obj, feat, bn, c in keys:
        sel = {e: {r["seed"]: r["acc_mean"] for r in rows
                   if (r["objective"], r["feature"], r["bn"], r.get("C", "1.0"), r["encoder"]) == (obj, feat, bn, c, e)}
               for e in ("pretrained", "random_init")}
        seeds = sorted(sel["pretrained"])
        p = np.array([sel["pretrained"][s] for s in seeds])
        q = np.array([sel["random_init"][s] for s in seeds])
        folds = {e: {r["seed"]: r["fold_acc"] for r in rows
                     if (r["objective"], r["feature"], r["bn"], r.get("C", "1.0"), r["encoder"]) == (obj, feat, bn, c, e)}
                 for e in ("pretrained", "random_init")}
        d = np.concatenate([np.subtract(folds["pretrained"][s], folds["random_init"][s]) for s in seeds])
        out.append({"objective": obj, "feature": feat, "bn": bn, "C": c, "seeds": seeds,
                    "pretrained_mean": float(p.mean()), "pretrained_std": float(p.std()),
                    "random_mean": float(q.mean()), "random_std": float(q.std()),
                    "gain_mean": float((p - q).mean()), "wins": int((p > q).sum()),
                    "folds_better_tied_worse": [int((d > 1e-9).sum()), int((np.abs(d) <= 1e-9).sum()),
                                                int((d < -1e-9).sum())]})
    return out


def print_table(summary: List[Dict[str, Any]], rows: List[Dict[str, Any]]) -> None:
    print("| objective | probe feature | BN stats | C | pretrained | random init | gain | seeds won | folds +/=/- |")
    print("|---|---|---|---|---:|---:|---:|---:|---|")
    for s in summary:
        print(f"| {s['objective']} | {s['feature']} | {s['bn']} | {s.get('C', '1.0')} | {s['pretrained_mean']:.3f} ± {s['pretrained_std']:.3f}"
              f" | {s['random_mean']:.3f} ± {s['random_std']:.3f} | {s['gain_mean']:+.3f} | {s['wins']}/{len(s['seeds'])} | "
              + "/".join(map(str, s["folds_better_tied_worse"])) + " |")
    print("\npretraining loss (first logged -> last), seconds:")
    seen = set()
    for r in rows:
        k = (r["objective"], r["seed"])
        if k not in seen:
            seen.add(k)
            print(f"  {r['objective']} seed {r['seed']}: {r['loss_first']:.3f} -> {r['loss_last']:.3f} "
                  f"({r['pretrain_s']:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objectives", nargs="+", default=list(EXPERIMENT), choices=list(EXPERIMENT))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--dataset", default="", choices=["", *DATASETS],
                    help="pretrain and probe on this TU set with its configured node features (GIN and objective "
                         "settings of the MUTAG experiment files); explicit options below override")
    ap.add_argument("--pretrain-source", default="", help="default: --dataset, else MUTAG")
    ap.add_argument("--probe-source", default="", help="default: --dataset, else MUTAG")
    ap.add_argument("--node-features", default="", help="override data.features (e.g. 'atoms+degree')")
    ap.add_argument("--max-degree", type=int, default=None)
    ap.add_argument("--features", nargs="+", default=["mean/last", "sum/all"])
    ap.add_argument("--bn", nargs="+", default=["running"], choices=["running", "recompute"])
    ap.add_argument("--C", nargs="+", default=["1.0"],
                    help="probe regularisation: numbers (core probe, fixed C) and/or 'cv' (inner 5-fold CV on the "
                         "training fold over 1e-3..1e3)")
    ap.add_argument("--override", nargs="*", default=[], help="extra config overrides (key=value)")
    ap.add_argument("--baseline-only", action="store_true", help="only the no-GNN input-feature probe")
    ap.add_argument("--tu-root", default="")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "runs" / "graph_probe_seeds"))
    args = ap.parse_args()
    apply_dataset(args)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = [input_baseline(seed, args, Path(tmp)) for seed in args.seeds]
        accs = np.array([b["acc_mean"] for b in base])
        print(f"no GNN (probe on mean+sum pooled node features): {accs.mean():.3f} ± {accs.std():.3f} "
              f"over seeds {args.seeds} (per seed: {', '.join(f'{a:.3f}' for a in accs)})", flush=True)
        (out / "results.json").write_text(json.dumps({"args": vars(args), "summary": [], "rows": [],
                                                      "input_baseline": base}, indent=1))
        for objective in [] if args.baseline_only else args.objectives:
            for seed in args.seeds:
                rows += run_one(objective, seed, args, Path(tmp))
                summary = summarize(rows)
                (out / "results.json").write_text(json.dumps({"args": vars(args), "summary": summary, "rows": rows,
                                                              "input_baseline": base}, indent=1))
                last = [r for r in rows if (r["objective"], r["seed"]) == (objective, seed)]
                print(f"[done] {objective} seed {seed} ({last[0]['pretrain_s']:.0f} s pretraining, loss "
                      f"{last[0]['loss_first']:.3f} -> {last[0]['loss_last']:.3f}): " + ", ".join(
                          f"{r['feature']}/{r['bn']}/C={r['C']} {r['encoder']} {r['acc_mean']:.3f}" for r in last),
                      flush=True)
    if rows:
        print_table(summarize(rows), rows)
    print(f"\nwrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
