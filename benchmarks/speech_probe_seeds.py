"""Speaker-ID probe on the shared clips: random init vs base vs continued, paired over seeds and folds.

For every model seed ``s`` (``--seeds``) this script

1. pretrains the tiny wav2vec 2.0 ("base") for ``--base-steps`` on generated speech-like audio (seed ``s``),
   then continues pretraining from its HF folder for ``--continue-steps`` on the shared clips
   (``../shared/data/speech``; fresh optimizer) — the same recipe as ``benchmarks/speech_continue.py``;
2. builds the same architecture at random init under seed ``s`` (= the base run's starting point);
3. cuts every utterance of the 8 probe speakers (classes with >= 2 utterances) into non-overlapping
   ``--probe-seconds`` chunks (each normalised; the modality's own chunking) and embeds every chunk once
   per model and per layer (mean over real frames of hidden layer ``l``: ``conv`` = conv feature
   encoder output, 0 = transformer input, k = after block k), plus an MFCC mean/std reference (no
   learning) on the same chunks; features are saved to ``<out>/features_s<seed>.npz``;
4. fits the core probes (``sslab.eval.probe.linear_probe``, standardised logistic regression C=1, and
   ``knn_probe`` k=5 — cosine on raw features — and, as a diagnostic, the same kNN on features
   standardised with the training fold's mean/std) on **identical** splits for all models: ``--repeats`` x stratified group K-fold
   over utterances (``StratifiedGroupKFold``; groups = utterances, so the chunks of one utterance are
   never on both sides; speakers stratified).

Per model / layer: chunk accuracy pooled over the K test folds of a repeat (every chunk is tested once
per repeat), mean ± std over (seed, repeat); paired differences (continued − base, base − random,
continued − random) with how many seeds (seed means) and how many (seed, repeat, fold) splits are > 0.
Layer sweep: the best layer per model is chosen on the first seed and re-measured on the other seeds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/speech_probe_seeds.py --seeds 0 1 2 \\
        --base-steps 400 --continue-steps 150 --batch-size 8 --max-seconds 1.5 --lr 5e-3

``--reprobe runs/bench_speech_probe_seeds --cv-seed 1`` re-fits the probes on the saved features with a
fresh split set (no training). ``--summarize a.json [b.json ...]`` reprints the tables of saved results (seeds of several runs with the
same recipe and splits are merged, e.g. ``--seeds 3 4 --out runs/x`` run later).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speech_continue import experiment  # noqa: E402  (same pretraining recipe as the single-split benchmark)

from sslab.encoders.wav2vec2 import Wav2Vec2Encoder, tiny_config  # noqa: E402
from sslab.eval.probe import extract_features, knn_probe, linear_probe  # noqa: E402
from sslab.modalities.speech import ProbeChunks, SpeechModality, collate_probe  # noqa: E402
from sslab.run import pretrain  # noqa: E402

MODELS = ("random_init", "base", "continued")
PAIRS = (("continued", "base"), ("base", "random_init"), ("continued", "random_init"))


def all_chunks(modality: SpeechModality) -> ProbeChunks:
    """All speaker-probe chunks (the modality's train + test chunks of its single split, merged)."""
    task = next(t for t in modality.probe_tasks() if t.name == "speaker_id")
    tr, te = task.train, task.test
    return ProbeChunks(tr.corpus, tr.chunks + te.chunks, tr.labels + te.labels)


def cv_splits(y: np.ndarray, groups: np.ndarray, folds: int, repeats: int, cv_seed: int) -> List[List[Tuple[np.ndarray, np.ndarray]]]:
    """``repeats`` lists of ``folds`` (train, test) index pairs; groups never straddle train and test."""
    from sklearn.model_selection import StratifiedGroupKFold

    out = []
    for r in range(repeats):
        skf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=cv_seed * 1000 + r)
        splits = list(skf.split(np.zeros(len(y)), y, groups))
        for tr, te in splits:
            assert not set(groups[tr]) & set(groups[te]), "an utterance straddles train and test"
        out.append(splits)
    return out


def embed_layers(encoder: Wav2Vec2Encoder, chunks: ProbeChunks, layers: Sequence[Any]) -> Dict[Any, np.ndarray]:
    """Mean-pooled (real frames only) features of each layer for every chunk; layer ``"conv"`` = the
    convolutional feature encoder's output (before the feature projection's layer norm)."""
    encoder.eval()

    def conv_mean(b: Dict[str, torch.Tensor]) -> torch.Tensor:
        conv = encoder.model.wav2vec2.feature_extractor(b["input_values"]).transpose(1, 2)
        return encoder.pool(conv, encoder.frame_mask(b["attention_mask"], conv.shape[1], conv.shape[0], conv.device))

    feats = {}
    for layer in layers:
        fn = conv_mean if layer == "conv" else (lambda b, _l=layer: encoder.embed(b, layer=_l, level="utterance"))
        X, _ = extract_features(fn, chunks, collate_probe, batch_size=16)
        feats[layer] = X
    return feats


def mfcc_features(chunks: ProbeChunks) -> np.ndarray:
    """Reference without learning: mean and std over time of 20 MFCCs (torchaudio) per chunk."""
    import torchaudio

    mfcc = torchaudio.transforms.MFCC(sample_rate=16000, n_mfcc=20, melkwargs={"n_fft": 400, "hop_length": 160, "n_mels": 40})
    rows = []
    for i in range(len(chunks)):
        m = mfcc(chunks[i][0]["input_values"])  # [20, frames]
        rows.append(torch.cat([m.mean(1), m.std(1)]).numpy())
    return np.stack(rows)


def probe_cv(X: np.ndarray, y: np.ndarray, splits: List[List[Tuple[np.ndarray, np.ndarray]]], knn_k: int) -> Dict[str, Any]:
    """Per repeat: pooled chunk accuracy (linear, kNN) and per-fold linear accuracy / macro-F1."""
    reps = []
    for folds in splits:
        correct_lin = correct_knn = correct_knn_std = total = 0
        fold_acc, fold_f1 = [], []
        for tr, te in folds:
            lin = linear_probe(X[tr], y[tr], X[te], y[te], "multiclass", C=1.0, seed=0)
            knn = knn_probe(X[tr], y[tr], X[te], y[te], k=knn_k)
            knn_std = knn_probe(X[tr], y[tr], X[te], y[te], k=knn_k, standardize=True)  # diagnostic
            correct_knn_std += knn_std["knn_accuracy"] * len(te)
            correct_lin += lin["accuracy"] * len(te)
            correct_knn += knn["knn_accuracy"] * len(te)
            total += len(te)
            fold_acc.append(lin["accuracy"])
            fold_f1.append(lin["macro_f1"])
        reps.append({"linear_acc": correct_lin / total, "knn_acc": correct_knn / total,
                     "knn_std_acc": correct_knn_std / total,
                     "fold_linear_acc": fold_acc, "fold_macro_f1": fold_f1})
    return {"repeats": reps}


def train_models(seed: int, args: argparse.Namespace, out: Path) -> Tuple[Dict[str, Wav2Vec2Encoder], Dict[str, float], SpeechModality]:
    ns = argparse.Namespace(**{**vars(args), "seed": seed, "probe_layer": 1})
    cfg_json = json.dumps(tiny_config())
    t0 = time.perf_counter()
    base_run = pretrain(experiment(f"base_s{seed}", out, "synthetic", [f"encoder.config={cfg_json}"], args.base_steps, ns))
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    cont_cfg = experiment(f"continued_s{seed}", out, "shared", [f"encoder.pretrained={base_run / 'hf'}"], args.continue_steps, ns)
    cont_run = pretrain(cont_cfg)
    t_cont = time.perf_counter() - t0
    torch.manual_seed(seed)  # the base run's starting point (pretrain seeds torch with cfg.seed)
    encoders = {"random_init": Wav2Vec2Encoder(config=tiny_config()),
                "base": Wav2Vec2Encoder(pretrained=str(base_run / "hf")),
                "continued": Wav2Vec2Encoder(pretrained=str(cont_run / "hf"))}
    return encoders, {"base_s": round(t_base, 1), "continued_s": round(t_cont, 1)}, SpeechModality(cont_cfg)


def _ms(xs: Sequence[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}"


def summarize(res: Dict[str, Any]) -> str:
    """Markdown tables: per layer/model accuracy; paired differences; layer chosen on the first seed."""
    seeds = [int(s) for s in res["per_seed"]]
    layers = res["layers"]
    lines = [f"chunks: {res['n_chunks']} from {res['n_utterances']} utterances, {res['n_classes']} speakers; "
             f"{res['args']['repeats']} x {res['args']['folds']}-fold stratified group CV (cv seed {res['args']['cv_seed']}); "
             f"model seeds {seeds}", ""]
    mf = res["mfcc"]["repeats"]
    lines.append(f"MFCC mean/std reference (no learning): linear {_ms([r['linear_acc'] for r in mf])}, "
                 f"kNN {_ms([r['knn_acc'] for r in mf])} (over repeats)")
    lines.append("")
    lines.append("| layer | model | linear acc (mean ± std over seed×repeat) | kNN acc | kNN acc, standardised |")
    lines.append("|---|---|---|---|---|")
    for layer in layers:
        for m in MODELS:
            lin = [r["linear_acc"] for s in seeds for r in res["per_seed"][str(s)]["probe"][m][str(layer)]["repeats"]]
            knn = [r["knn_acc"] for s in seeds for r in res["per_seed"][str(s)]["probe"][m][str(layer)]["repeats"]]
            reps = [r for s in seeds for r in res["per_seed"][str(s)]["probe"][m][str(layer)]["repeats"]]
            std = _ms([r["knn_std_acc"] for r in reps]) if all("knn_std_acc" in r for r in reps) else "–"
            lines.append(f"| {layer} | {m} | {_ms(lin)} | {_ms(knn)} | {std} |")
    lines += ["", "Paired differences (same chunks, same folds): mean ± std over seeds of the per-seed mean; "
              "seeds > 0; (seed, repeat, fold) splits > 0 (linear acc).", "",
              "| layer | metric | difference | mean ± std | seeds > 0 | splits > 0 |", "|---|---|---|---|---|---|"]
    for layer in layers:
        metrics = ["linear_acc", "knn_acc"] + (["knn_std_acc"] if "knn_std_acc" in res["mfcc"]["repeats"][0] else [])
        for metric in metrics:
            for a, b in PAIRS:
                per_seed, per_split = [], []
                for s in seeds:
                    pa = res["per_seed"][str(s)]["probe"][a][str(layer)]["repeats"]
                    pb = res["per_seed"][str(s)]["probe"][b][str(layer)]["repeats"]
                    per_seed.append(statistics.mean(x[metric] - z[metric] for x, z in zip(pa, pb)))
                    if metric == "linear_acc":
                        per_split += [fa - fb for x, z in zip(pa, pb) for fa, fb in zip(x["fold_linear_acc"], z["fold_linear_acc"])]
                split_txt = f"{sum(d > 0 for d in per_split)}/{len(per_split)} (= {sum(d == 0 for d in per_split)})" if per_split else "–"
                lines.append(f"| {layer} | {metric} | {a} − {b} | {statistics.mean(per_seed):+.3f} ± "
                             f"{statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0:.3f} | "
                             f"{sum(d > 0 for d in per_seed)}/{len(per_seed)} | {split_txt} |")
    if len(seeds) > 1:
        sel, rest = seeds[0], seeds[1:]
        lines += ["", f"Layer sweep: best layer per model by linear acc on seed {sel}, re-measured on seeds {rest}:", "",
                  "| model | best layer (seed %d) | acc on seed %d | acc on other seeds (mean ± std) | last layer on other seeds |" % (sel, sel),
                  "|---|---|---|---|---|"]
        for m in MODELS:
            def acc(s: int, layer: int) -> float:
                return statistics.mean(r["linear_acc"] for r in res["per_seed"][str(s)]["probe"][m][str(layer)]["repeats"])
            best = max(layers, key=lambda layer: acc(sel, layer))
            lines.append(f"| {m} | {best} | {acc(sel, best):.3f} | {_ms([acc(s, best) for s in rest])} | "
                         f"{_ms([acc(s, layers[-1]) for s in rest])} |")
    lines += ["", "pretraining seconds per seed: " + ", ".join(
        f"{s}: {res['per_seed'][str(s)]['seconds']}" for s in seeds)]
    return "\n".join(lines)


def merge(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One result from runs with different model seeds but the same recipe, chunks and splits."""
    same = ("base_steps", "continue_steps", "batch_size", "max_seconds", "lr", "probe_seconds", "folds",
            "repeats", "cv_seed", "knn_k")
    out = json.loads(json.dumps(results[0]))
    for r in results[1:]:
        diff = [k for k in same if r["args"][k] != out["args"][k]]
        if diff or r["n_chunks"] != out["n_chunks"]:
            raise ValueError(f"cannot merge results with different {diff or ['n_chunks']}")
        clash = set(r["per_seed"]) & set(out["per_seed"])
        if clash:
            raise ValueError(f"seed(s) {sorted(clash)} in more than one result")
        out["per_seed"].update(r["per_seed"])
    out["args"]["seeds"] = [int(s) for s in out["per_seed"]]
    return out


def reprobe(folder: Path, args: argparse.Namespace) -> Dict[str, Any]:
    """Same features (``features_s<seed>.npz`` of a finished run), new splits from ``args.cv_seed``."""
    saved = json.loads((folder / "speech_probe_seeds.json").read_text())
    ns = argparse.Namespace(**{**saved["args"], "probe_layer": 1, "seed": 0})
    cfg = experiment("reprobe", folder, "shared", [f"encoder.config={json.dumps(tiny_config())}"], 1, ns)
    modality = SpeechModality(cfg)
    modality.data.probe_seconds = saved["args"]["probe_seconds"]
    chunks = all_chunks(modality)
    y, groups = np.asarray(chunks.labels), np.asarray(chunks.utterances)
    splits = cv_splits(y, groups, saved["args"]["folds"], saved["args"]["repeats"], args.cv_seed)
    res = {**saved, "args": {**saved["args"], "cv_seed": args.cv_seed},
           "mfcc": probe_cv(mfcc_features(chunks), y, splits, saved["args"]["knn_k"]), "per_seed": {}}
    for seed, entry in saved["per_seed"].items():
        f = np.load(folder / f"features_s{seed}.npz")
        if not (np.array_equal(f["y"], y) and np.array_equal(f["groups"], groups)):
            raise ValueError(f"{folder}/features_s{seed}.npz: chunks differ from the current chunking")
        probe = {m: {str(l): probe_cv(f[f"{m}_{l}"], y, splits, saved["args"]["knn_k"]) for l in saved["layers"]}
                 for m in MODELS}
        res["per_seed"][seed] = {"seconds": entry["seconds"], "probe": probe}
    (folder / f"speech_probe_seeds_cv{args.cv_seed}.json").write_text(json.dumps(res, indent=1))
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--base-steps", type=int, default=400)
    p.add_argument("--continue-steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-seconds", type=float, default=1.5)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--probe-seconds", type=float, default=2.0)
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cv-seed", type=int, default=0)
    p.add_argument("--knn-k", type=int, default=5)
    p.add_argument("--shared-data", default="../shared/data")
    p.add_argument("--out", default="runs/bench_speech_probe_seeds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reprobe", default=None,
                   help="re-fit the probes on the features saved in this --out folder with another --cv-seed (no training)")
    p.add_argument("--summarize", nargs="+", default=None,
                   help="reprint the tables of saved result JSONs (several: their seeds are merged)")
    args = p.parse_args()
    if args.summarize:
        print(summarize(merge([json.loads(Path(f).read_text()) for f in args.summarize])))
        return
    torch.set_num_threads(args.threads)
    if args.reprobe:
        print(summarize(reprobe(Path(args.reprobe), args)))
        return
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    L = tiny_config()["num_hidden_layers"]
    layers: List[Any] = ["conv", *range(0, L + 1)]
    res: Dict[str, Any] = {"args": vars(args), "layers": layers, "per_seed": {}}
    chunks = y = groups = splits = None
    for seed in args.seeds:
        encoders, seconds, modality = train_models(seed, args, out)
        if chunks is None:  # chunks and splits are fixed by the data and --cv-seed, not by the model seed
            modality.data.probe_seconds = args.probe_seconds
            chunks = all_chunks(modality)
            y, groups = np.asarray(chunks.labels), np.asarray(chunks.utterances)
            splits = cv_splits(y, groups, args.folds, args.repeats, args.cv_seed)
            res.update(n_chunks=len(y), n_utterances=len(set(groups.tolist())), n_classes=len(set(y.tolist())),
                       mfcc=probe_cv(mfcc_features(chunks), y, splits, args.knn_k))
        t0 = time.perf_counter()
        feats = {m: embed_layers(enc, chunks, layers) for m, enc in encoders.items()}
        np.savez(out / f"features_s{seed}.npz", y=y, groups=groups,
                 **{f"{m}_{l}": X for m, f in feats.items() for l, X in f.items()})  # for re-analysis
        probe = {m: {str(l): probe_cv(X, y, splits, args.knn_k) for l, X in f.items()} for m, f in feats.items()}
        seconds["probe_s"] = round(time.perf_counter() - t0, 1)
        res["per_seed"][str(seed)] = {"seconds": seconds, "probe": probe}
        (out / "speech_probe_seeds.json").write_text(json.dumps(res, indent=1))
        print(f"seed {seed} done: {seconds}", flush=True)
    print(summarize(res))


if __name__ == "__main__":
    main()
