"""Does text pretraining beat the same encoder at random init? A paired, many-seed measurement.

For every seed and method the experiment is pretrained (``sslab.run.pretrain``) and both the
exported encoder and the same architecture at random init (same seed = the pretraining start) embed
the labelled texts once (by default the 307 labelled PTB-XL reports). The probe (text -> class;
standardised logistic regression, C=1) is then fitted on **identical** repeated stratified K-fold splits for both
encoders (paired design), with

* label fractions (a stratified subsample of each training fold; >= 1 report per class),
* two poolings of the frozen token features: ``mean`` over real tokens (incl. [CLS]/[SEP]) and
  ``cls`` (the first token), plus a diagnostic ``emb``: the mean of the input token embeddings
  (a bag of embeddings, no transformer layers),

and a TF-IDF bag-of-words logistic regression on the same splits as a reference for how
keyword-driven the labels are. Reported per (method, pooling, fraction): accuracy and macro-F1 of
both encoders (mean ± std over seeds of the per-seed CV mean), the paired difference (mean ± std over
seeds, a t-based 95% CI over seeds) and how many seeds / how many (seed, repeat, fold) splits
have a positive difference.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/text_probe_seeds.py --seeds 0 1 2 3 4 \\
        --methods mlm15 electra_gdes --steps 600 --cv-seed 0

``--cv-seed`` picks the split set; select settings on one (seeds, cv-seed) and re-measure on others.
``--corpus ptbxl+pydoc`` pretrains on the reports plus Python's bundled docs (packed blocks).
``--corpus stdlib_docs --probe stdlib_docs`` pretrains on the standard-library docstrings and probes
docstring -> top-level module (20 classes; docs/text.md). ``--summarize runs/text_probe_seeds/*.json``
reprints the compact tables of saved results; add ``--merge`` to pool the seeds of several files
(e.g. two processes run side by side on different seeds) into one table.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

EXPERIMENTS = {
    "mlm15": ("experiments/text/mlm_ptbxl.yaml", []),
    "mlm30": ("experiments/text/mlm30_ptbxl.yaml", []),
    "electra_gdes": ("experiments/text/electra_gdes_ptbxl.yaml", []),
    "rts": ("experiments/text/mlm_ptbxl.yaml", ["objective={name: rts}"]),
    "slm": ("experiments/text/mlm_ptbxl.yaml", ["objective={name: slm}"]),
    "clm": ("experiments/text/mlm_ptbxl.yaml", ["objective={name: clm}", "encoder.causal=true"]),
    "ul2": ("experiments/text/ul2_ptbxl.yaml", []),
    "mosaicbert": ("experiments/text/mosaicbert_mlm_ptbxl.yaml", []),
    "switchlora_mlm": ("experiments/text/switchlora_mlm_ptbxl.yaml", []),
}
CORPORA = {
    "ptbxl": ["data.sources=[ptbxl]"],
    # pydoc topics are long documents: pack them (and the reports) into max_len blocks instead of
    # truncating each topic to max_len tokens
    "ptbxl+pydoc": ["data.sources=[ptbxl,pydoc]", "data.pack=true"],
    # standard-library docstrings (~6.1k documents, ~1.4 MB): packed blocks, a vocabulary for English
    "stdlib_docs": ["data.sources=[stdlib_docs]", "data.pack=true", "data.vocab_size=4000"],
}
#: labelled probe sets: PTB-XL report -> diagnostic superclass, stdlib docstring -> top-level module
PROBES = ("ptbxl", "stdlib_docs")
POOLS = ("mean", "cls", "emb")


def first_last_means(logs: Sequence[Dict[str, Any]], n: int = 5) -> Dict[str, List[float]]:
    """``key: [mean of the first n logged values, mean of the last n]`` for every loss/accuracy key
    (single-batch logs are noisy; ELECTRA's total loss is not a progress measure on its own, because
    the discriminator's task gets harder as the generator improves)."""
    keys = sorted({k for r in logs for k in r if k.endswith(("loss", "_acc"))})
    out = {}
    for k in keys:
        v = [float(r[k]) for r in logs if k in r]
        out[k] = [round(statistics.mean(v[:n]), 4), round(statistics.mean(v[-n:]), 4)]
    return out


def encoder_overrides(experiment: str, overrides: Sequence[str]) -> List[str]:
    """``encoder.<key>=`` overrides address the base encoder of an ``adapted`` (LoRA-family) encoder."""
    import yaml

    spec = yaml.safe_load(Path(experiment).read_text()).get("encoder", {})
    if spec.get("name") != "adapted":
        return list(overrides)
    out = []
    for o in overrides:
        key = o.split("=", 1)[0]
        if key.startswith("encoder.") and key.split(".")[1] not in ("name", "base", "adapter"):
            o = "encoder.base." + o[len("encoder."):]
        out.append(o)
    return out


def pool_tokens(tokens: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """``mean`` over real tokens or the first ([CLS]) token of ``[B, L, D]`` token features
    (``emb`` is ``mean`` applied to the input token embeddings)."""
    if how == "cls":
        return tokens[:, 0]
    m = attention_mask.to(tokens.dtype)[..., None]
    return (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)


@torch.no_grad()
def embed_all(encoder: torch.nn.Module, ids: Sequence[List[int]], batch: int = 64) -> Dict[str, np.ndarray]:
    from sslab.datasets.text_packing import pad_ids
    from sslab.datasets.text_tokenizer import PAD_ID

    encoder.eval()
    out: Dict[str, List[torch.Tensor]] = {p: [] for p in POOLS}
    for i in range(0, len(ids), batch):
        b = pad_ids(ids[i:i + batch], PAD_ID)
        tok = encoder(b)
        for p in POOLS:
            feats = encoder.get_input_embeddings()(b["input_ids"]) if p == "emb" else tok
            out[p].append(pool_tokens(feats, b["attention_mask"], "mean" if p == "emb" else p))
    return {p: torch.cat(v).double().numpy() for p, v in out.items()}


def splits(y: np.ndarray, folds: int, repeats: int, cv_seed: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import RepeatedStratifiedKFold

    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=cv_seed)
    return list(cv.split(np.zeros(len(y)), y))


def fraction_subset(y_tr: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    from sslab.eval.probe import subsample

    return subsample(y_tr, fraction, "multiclass", seed)


def fit_score(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray, C: float) -> Tuple[float, float]:
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))
        model.fit(Xtr, ytr)
        pred = model.predict(Xte)
    return float(accuracy_score(yte, pred)), float(f1_score(yte, pred, average="macro", labels=np.unique(yte)))


def cv_scores(X: np.ndarray, y: np.ndarray, sp: Sequence[Tuple[np.ndarray, np.ndarray]], fraction: float,
              C: float) -> List[Tuple[float, float]]:
    """(accuracy, macro-F1) per split; the training subsample depends only on the split index."""
    res = []
    for k, (tr, te) in enumerate(sp):
        sub = tr[fraction_subset(y[tr], fraction, seed=k)]
        res.append(fit_score(X[sub], y[sub], X[te], y[te], C))
    return res


def bow_scores(texts: Sequence[str], y: np.ndarray, sp: Sequence[Tuple[np.ndarray, np.ndarray]],
               fraction: float, C: float) -> List[Tuple[float, float]]:
    """TF-IDF word uni+bigrams -> logistic regression on the same splits (keyword reference)."""
    import warnings

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    res = []
    for k, (tr, te) in enumerate(sp):
        sub = tr[fraction_subset(y[tr], fraction, seed=k)]
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        Xtr = vec.fit_transform([texts[i] for i in sub])
        Xte = vec.transform([texts[i] for i in te])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = LogisticRegression(C=10.0, max_iter=3000).fit(Xtr, y[sub])
        pred = model.predict(Xte)
        res.append((float(accuracy_score(y[te], pred)),
                    float(f1_score(y[te], pred, average="macro", labels=np.unique(y[te])))))
    return res


def labelled_texts(probe: str, shared_data: str) -> Tuple[List[str], np.ndarray, List[str]]:
    import warnings

    from sslab.datasets.text import ptbxl_reports
    from sslab.datasets.text_stdlib import stdlib_probe_documents

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if probe == "ptbxl":
            docs = [d for d in ptbxl_reports(Path(shared_data) / "ecg" / "ptbxl") if d.label is not None]
        else:
            docs = stdlib_probe_documents()[0]
    classes = sorted({d.label for d in docs})  # type: ignore[type-var]
    return [d.text for d in docs], np.array([classes.index(d.label) for d in docs]), classes  # type: ignore[arg-type]


def encode_reports(tok: Any, texts: Sequence[str], max_len: int) -> List[List[int]]:
    """The modality's probe encoding: [CLS] text [SEP], cut to max_len keeping the final [SEP]."""
    out = []
    for t in texts:
        ids = tok(t)["input_ids"]
        out.append(ids[: max_len - 1] + [ids[-1]] if len(ids) > max_len else ids)
    return out


def t_ci(values: Sequence[float]) -> float:
    """Half-width of the two-sided 95% t interval of the mean (0 for one value)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return 0.0
    return float(stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n))


def ms(v: Sequence[float]) -> str:
    return f"{statistics.mean(v):.3f}" + (f" ± {statistics.stdev(v):.3f}" if len(v) > 1 else "")


def compact_table(summary: Sequence[Dict[str, Any]], fractions: Sequence[float]) -> str:
    """Markdown: one row per (method, pool); per label fraction ``random -> pretrained`` accuracy
    (means over seeds), the paired Δ with its 95% t-CI over seeds, and seeds with Δ > 0."""
    head = "| method | pool | " + " | ".join(f"{100 * f:g}% of labels" for f in fractions) + " |"
    lines = ["cells: accuracy random init -> pretrained, paired Δ (95% CI over seeds), seeds with Δ > 0",
             head, "|" + "---|" * (2 + len(fractions))]
    keys = list(dict.fromkeys((r["method"], r["pool"]) for r in summary))
    for m, p in keys:
        cells = []
        for f in fractions:
            r = next(x for x in summary if x["method"] == m and x["pool"] == p and x["fraction"] == f)
            d = r["d_acc"]
            cells.append(f"{statistics.mean(r['random_acc']):.3f} -> {statistics.mean(r['pre_acc']):.3f}, "
                         f"{statistics.mean(d):+.3f} (±{t_ci(d):.3f}), {sum(x > 0 for x in d)}/{len(d)}")
        lines.append(f"| {m} | {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def merge_summaries(results: Sequence[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], List[float]]:
    """Pool the per-seed lists of several result files (e.g. two processes run on different seeds).
    Files must agree on what was measured; seeds must not repeat."""
    same = ("corpus", "probe", "steps", "set", "folds", "repeats", "fractions", "C")
    first = results[0]["args"]
    for r in results[1:]:
        diff = [k for k in same if r["args"].get(k) != first.get(k)]
        if diff:
            raise SystemExit(f"cannot merge: the files differ in {diff}")
    seeds = [s for r in results for s in r["args"]["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"cannot merge: seeds repeat across files ({seeds})")
    merged: Dict[Tuple[str, str, float], Dict[str, Any]] = {}
    for r in results:
        for row in r["summary"]:
            key = (row["method"], row["pool"], row["fraction"])
            if key not in merged:
                merged[key] = {k: (list(v) if isinstance(v, list) else v) for k, v in row.items()}
            else:
                for k, v in row.items():
                    if isinstance(v, list):
                        merged[key][k].extend(v)
                    elif k.startswith("splits"):
                        merged[key][k] += v
    return list(merged.values()), first["fractions"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="+", default=["mlm15", "electra_gdes"])
    ap.add_argument("--steps", type=int, default=600, help="MLM-15%% steps; the other methods get equal FLOPs "
                    "(see --flop-ratio)")
    ap.add_argument("--flop-ratio", nargs="*", default=None,
                    help="method=ratio steps multipliers (default: measured, MLM-15%% FLOPs per step / the method's, "
                         "sslab.core.flops.training_step_flops on the run's config)")
    ap.add_argument("--corpus", choices=list(CORPORA), default="ptbxl")
    ap.add_argument("--probe", choices=PROBES, default="ptbxl", help="labelled set for the probe")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cv-seed", type=int, default=0)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 1.0])
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--shared-data", default="../shared/data")
    ap.add_argument("--out", default="runs/text_probe_seeds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep-runs", action="store_true", help="keep the pretraining run folders")
    ap.add_argument("--summarize", nargs="*", default=None, metavar="JSON",
                    help="only print the compact tables of saved result files, run nothing")
    ap.add_argument("--merge", action="store_true", help="with --summarize: pool the seeds of the files into one "
                    "table (the files must share corpus, probe, steps and overrides)")
    ap.add_argument("--set", nargs="*", default=["encoder.dim=64", "encoder.depth=2", "optim.warmup_steps=30"],
                    help="key=value overrides for every run")
    args = ap.parse_args()
    if args.summarize is not None and args.merge:
        print(compact_table(*merge_summaries([json.loads(Path(p).read_text()) for p in args.summarize])))
        return
    if args.summarize is not None:
        for path in args.summarize:
            d = json.loads(Path(path).read_text())
            a = d["args"]
            print(f"\n{path}: corpus {a['corpus']}, seeds {a['seeds']}, cv seed {a['cv_seed']}, steps {a['steps']}, "
                  f"set {a['set']}")
            print(compact_table(d["summary"], a["fractions"]))
            print("TF-IDF bag of words: " + ", ".join(f"{k}: acc {statistics.mean(x for x, _ in v):.3f}"
                                                     for k, v in d["bow"].items()))
        return
    torch.set_num_threads(args.threads)
    import shutil

    from sslab.core.config import load_experiment
    from sslab.core.export import build_encoder, load_encoder
    from sslab.core.flops import training_step_flops
    from sslab.core.modality import build_modality
    from sslab.run import pretrain, seed_everything

    def cfg_for(m: str, seed: int, steps: int, runs: str = "runs"):  # type: ignore[no-untyped-def]
        path, extra = EXPERIMENTS[m]
        return load_experiment(path, [f"name={m}_{args.corpus}_s{seed}", f"seed={seed}", f"output_dir={out}/{runs}",
                                      f"train.steps={steps}", f"data.shared_data={args.shared_data}",
                                      "train.progress=false", *CORPORA[args.corpus],
                                      *encoder_overrides(path, args.set), *extra])

    out = Path(args.out)
    if args.flop_ratio is not None:
        ratios = {k: float(v) for k, v in (kv.split("=") for kv in args.flop_ratio)}
    else:  # equal compute: measured on this corpus and encoder
        flops = {m: training_step_flops(cfg_for(m, args.seeds[0], 1, runs="flops"))
                 for m in dict.fromkeys(["mlm15", *args.methods])}
        shutil.rmtree(out / "flops", ignore_errors=True)
        ratios = {m: flops["mlm15"] / f for m, f in flops.items()}
        print("GFLOP per step:", {m: round(f / 1e9, 3) for m, f in flops.items()},
              "steps multipliers:", {m: round(r, 3) for m, r in ratios.items()}, flush=True)
    texts, y, classes = labelled_texts(args.probe, args.shared_data)
    sp = splits(y, args.folds, args.repeats, args.cv_seed)
    print(f"{len(y)} labelled texts ({args.probe}), classes {classes} counts {np.bincount(y).tolist()}; "
          f"{len(sp)} splits ({args.repeats}x{args.folds}-fold, cv seed {args.cv_seed})", flush=True)
    bow = {f: bow_scores(texts, y, sp, f, args.C) for f in args.fractions}
    for f, r in bow.items():
        print(f"TF-IDF bag of words, fraction {f}: acc {statistics.mean(a for a, _ in r):.3f} "
              f"macro-F1 {statistics.mean(b for _, b in r):.3f}", flush=True)
    records: List[Dict[str, Any]] = []
    for seed in args.seeds:
        for m in args.methods:
            steps = max(1, round(args.steps * ratios.get(m, 1.0)))
            cfg = cfg_for(m, seed, steps)
            t0 = time.time()
            run = pretrain(cfg)
            secs = time.time() - t0
            logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            losses = [r["loss"] for r in logs if "loss" in r]
            modality = build_modality(load_experiment(run / "config.yaml"))
            ids = encode_reports(modality.tokenizer(), texts, int(cfg.data.get("max_len", 64)))
            pre = load_encoder(run)
            seed_everything(seed)  # the init the pretraining run started from
            rnd = build_encoder(pre.sslab_spec)
            feats = {"pretrained": embed_all(pre, ids), "random_init": embed_all(rnd, ids)}
            rec: Dict[str, Any] = {"method": m, "seed": seed, "steps": steps, "corpus": args.corpus,
                                   "train_s": round(secs, 1), "loss_first": round(losses[0], 3),
                                   "loss_last": round(losses[-1], 3), "logged": first_last_means(logs),
                                   "scores": {}}
            for enc, fs in feats.items():
                for p in POOLS:
                    for f in args.fractions:
                        rec["scores"][f"{enc}|{p}|{f}"] = cv_scores(fs[p], y, sp, f, args.C)
            line = {k: v for k, v in rec.items() if k != "scores"}
            for p in POOLS:
                for f in args.fractions:
                    a = np.mean([s[0] for s in rec["scores"][f"pretrained|{p}|{f}"]])
                    b = np.mean([s[0] for s in rec["scores"][f"random_init|{p}|{f}"]])
                    line[f"{p}@{f}"] = f"{a:.3f} vs {b:.3f}"
            print(json.dumps(line), flush=True)
            records.append(rec)
            if not args.keep_runs:
                shutil.rmtree(run, ignore_errors=True)

    print(f"\ncorpus {args.corpus}, seeds {args.seeds}, cv seed {args.cv_seed} ({args.repeats}x{args.folds}-fold); "
          "acc/F1 = mean ± std over seeds of the per-seed CV mean; diff = pretrained - random init (paired)")
    header = ("| method | pool | labels | random init acc | pretrained acc | Δacc (95% CI) | seeds Δ>0 | splits Δ>0 |"
              " random init F1 | pretrained F1 | ΔF1 |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    summary = []
    for m in args.methods:
        for p in POOLS:
            for f in args.fractions:
                rs = [r for r in records if r["method"] == m]
                pa = [[s[0] for s in r["scores"][f"pretrained|{p}|{f}"]] for r in rs]
                ra = [[s[0] for s in r["scores"][f"random_init|{p}|{f}"]] for r in rs]
                pf = [[s[1] for s in r["scores"][f"pretrained|{p}|{f}"]] for r in rs]
                rf = [[s[1] for s in r["scores"][f"random_init|{p}|{f}"]] for r in rs]
                d_seed = [float(np.mean(np.subtract(a, b))) for a, b in zip(pa, ra)]
                df_seed = [float(np.mean(np.subtract(a, b))) for a, b in zip(pf, rf)]
                d_split = [x - z for a, b in zip(pa, ra) for x, z in zip(a, b)]
                row = {"method": m, "pool": p, "fraction": f,
                       "random_acc": [float(np.mean(v)) for v in ra], "pre_acc": [float(np.mean(v)) for v in pa],
                       "random_f1": [float(np.mean(v)) for v in rf], "pre_f1": [float(np.mean(v)) for v in pf],
                       "d_acc": d_seed, "d_f1": df_seed,
                       "splits_pos": sum(d > 0 for d in d_split), "splits_neg": sum(d < 0 for d in d_split),
                       "splits": len(d_split)}
                summary.append(row)
                print(f"| {m} | {p} | {f:g} | {ms(row['random_acc'])} | {ms(row['pre_acc'])} | "
                      f"{statistics.mean(d_seed):+.3f} (±{t_ci(d_seed):.3f}) | {sum(d > 0 for d in d_seed)}/{len(d_seed)} | "
                      f"{row['splits_pos']}/{row['splits_neg']}/{row['splits']} | {ms(row['random_f1'])} | "
                      f"{ms(row['pre_f1'])} | {statistics.mean(df_seed):+.3f} (±{t_ci(df_seed):.3f}) |")
    for f, r in bow.items():
        print(f"| TF-IDF bag of words (reference) | – | {f:g} | | {statistics.mean(a for a, _ in r):.3f} | | | | | "
              f"{statistics.mean(b for _, b in r):.3f} | |")
    print("splits Δ>0 = positive/negative/total paired differences over (seed, repeat, fold)\n")
    print(compact_table(summary, args.fractions))
    out.mkdir(parents=True, exist_ok=True)
    name = f"probe_seeds_{args.corpus}{'' if args.probe == 'ptbxl' else '_probe-' + args.probe}_cv{args.cv_seed}_s{'-'.join(map(str, args.seeds))}.json"
    (out / name).write_text(json.dumps({"args": vars(args), "classes": classes, "summary": summary,
                                        "bow": {str(k): v for k, v in bow.items()},
                                        "runs": records}, indent=1))
    print("wrote", out / name)


if __name__ == "__main__":
    main()
