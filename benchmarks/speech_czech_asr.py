"""Czech low-resource ASR: does continued wav2vec 2.0 pretraining on a new language help? (issue 20)

For each seed s:
1. **base** — the experiment's encoder pretrained for ``--base-steps`` on the non-Czech shared speech
   (``data.source=shared``: ../shared/data/speech, 43 clips, en/ru/zh), saved in HF format;
2. **continued** — continued pretraining from that HF folder on the Czech *training levels*
   (``experiments/speech/wav2vec2_czech.yaml`` as is: ``data.source: speech_cs``);
3. **random_init** — the same architecture under seed s (the base run's starting point);
4. floors ``floor:mfcc`` / ``floor:logmel`` — classical frames (20 ms hop) with the same linear CTC head.

Every encoder gets (a) the frozen-feature CTC probe and (b) CTC fine-tuning (conv front frozen, transformer
trained), on the same labelled subsets (``data.ctc.label_minutes`` minutes of transcribed clips from the
training levels, drawn with seed s, nested), scored by greedy-decoding CER / WER on the held-out levels
(``sslab.eval.ctc``); plus a speaker-ID linear probe (mean-pooled frozen features; train = the largest
labelled subset, test = held-out levels). Rows go to ``<out>/czech_asr.json``; ``--summarize`` prints the
table (mean +- std over seeds, paired continued - base).

Run (docs/speech.md has the measured table)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/speech_czech_asr.py \\
        --config experiments/speech/wav2vec2_czech.yaml --seeds 0 1 2 --base-steps 300
    python benchmarks/speech_czech_asr.py --summarize runs/speech_czech/czech_asr.json
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from sslab.core.config import load_experiment
from sslab.core.modality import build_modality
from sslab.datasets.audio import AudioItem, load_audio, normalize_waveform
from sslab.datasets.audio_transcribed import labelled_subset
from sslab.encoders.wav2vec2 import Wav2Vec2Encoder
from sslab.eval.ctc import (CharVocab, back_features, finetune_ctc, floor_frames, front_features, train_ctc_probe,
                            trivial_references)
from sslab.eval.probe import linear_probe
from sslab.run import pretrain, seed_everything

log = logging.getLogger("speech_czech_asr")
ENCODERS = ("random_init", "base", "continued")


def speaker_probe(train_x: np.ndarray, train_spk: Sequence[str], test_x: np.ndarray, test_spk: Sequence[str],
                  seed: int) -> Dict[str, Any]:
    """Linear probe (class-balanced logistic regression) on speakers with >= 2 training and >= 1 test clips."""
    classes = sorted(c for c in set(train_spk) if sum(s == c for s in train_spk) >= 2 and c in set(test_spk))
    idx = {c: i for i, c in enumerate(classes)}
    tr = [i for i, s in enumerate(train_spk) if s in idx]
    te = [i for i, s in enumerate(test_spk) if s in idx]
    res = linear_probe(train_x[tr], np.array([idx[train_spk[i]] for i in tr]), test_x[te],
                       np.array([idx[test_spk[i]] for i in te]), class_weight="balanced", seed=seed)
    out = {k: res[k] for k in ("accuracy", "macro_f1", "n_train", "n_test") if k in res}
    if "per_class_recall" in res:
        out["balanced_accuracy"] = float(np.mean(list(res["per_class_recall"].values()))
                                         if isinstance(res["per_class_recall"], dict) else np.mean(res["per_class_recall"]))
    out["classes"] = classes
    return out


def pooled(frames: Sequence[torch.Tensor], with_std: bool = False) -> np.ndarray:
    rows = [torch.cat([f.mean(0), f.std(0)]) if with_std else f.mean(0) for f in frames]
    return torch.stack(rows).double().numpy()


def run_seed(cfg_path: str, seed: int, args: argparse.Namespace, out: Path) -> List[Dict[str, Any]]:
    common = [f"seed={seed}", f"output_dir={out}", *args.set]
    cont_cfg = load_experiment(cfg_path, common + [f"name=czech_continued_s{seed}"])
    base_cfg = load_experiment(cfg_path, common + [f"name=czech_base_s{seed}", "data.source=shared",
                                                   f"train.steps={args.base_steps}",
                                                   f"optim.warmup_steps={max(1, args.base_steps // 10)}"])
    timing: Dict[str, float] = {}
    t0 = time.perf_counter()
    base_run = pretrain(base_cfg)
    timing["pretrain_base"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cont_cfg = load_experiment(cfg_path, common + [f"name=czech_continued_s{seed}",
                                                   f"encoder.pretrained={base_run / 'hf'}", "encoder.config=null"])
    cont_run = pretrain(cont_cfg)
    timing["pretrain_continued"] = time.perf_counter() - t0

    seed_everything(seed)
    encoders = {"random_init": build_modality(base_cfg).build_encoder(),
                "base": Wav2Vec2Encoder(pretrained=str(base_run / "hf"), layer=-1),
                "continued": Wav2Vec2Encoder(pretrained=str(cont_run / "hf"), layer=-1)}
    modality = build_modality(cont_cfg)
    ctc = modality.ctc  # type: ignore[attr-defined]
    train_items, test_items = modality.split_items()  # type: ignore[attr-defined]
    test_items = [it for it in test_items if it.text]
    minutes = sorted(ctc.label_minutes)
    lab_items: List[AudioItem] = labelled_subset(train_items, minutes[-1], seed=seed)
    subsets = {m: len(labelled_subset(train_items, m, seed=seed)) for m in minutes}  # nested prefixes
    sr = modality.data.sample_rate  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    lab_w = [normalize_waveform(load_audio(it.path, sr)) for it in lab_items]
    test_w = [normalize_waveform(load_audio(it.path, sr)) for it in test_items]
    timing["decode"] = time.perf_counter() - t0
    lab_txt, test_txt = [it.text or "" for it in lab_items], [it.text or "" for it in test_items]
    lab_spk, test_spk = [it.speaker for it in lab_items], [it.speaker for it in test_items]
    rows: List[Dict[str, Any]] = []

    def add(encoder: str, method: str, m: float, res: Dict[str, Any], seconds: float) -> None:
        row = {"seed": seed, "encoder": encoder, "method": method, "label_minutes": m,
               "labelled_seconds": round(sum(it.duration or 0 for it in lab_items[:subsets[m]]), 1),
               "seconds": round(seconds, 1), **{k: v for k, v in res.items()}}
        rows.append(row)
        log.info("seed %d %-12s %-9s %4.0f min: CER %.3f WER %.3f (%.0f s)", seed, encoder, method, m,
                 res["cer"], res["wer"], seconds)

    # classical floors: same linear CTC head on MFCC / log-mel frames
    for kind in ctc.floors:
        lab_f = [floor_frames(w, kind, sr) for w in lab_w]
        test_f = [floor_frames(w, kind, sr) for w in test_w]
        for m in minutes:
            n = subsets[m]
            vocab = CharVocab.from_texts(lab_txt[:n])
            t0 = time.perf_counter()
            res = train_ctc_probe(lab_f[:n], lab_txt[:n], test_f, test_txt, vocab, ctc.probe_epochs,
                                  ctc.probe_lr, ctc.batch_size, seed)
            add(f"floor:{kind}", "ctc_probe", m, res, time.perf_counter() - t0)
        rows.append({"seed": seed, "encoder": f"floor:{kind}", "method": "speaker_probe",
                     **speaker_probe(pooled(lab_f, True), lab_spk, pooled(test_f, True), test_spk, seed)})

    for name in ENCODERS:
        enc = encoders[name]
        t0 = time.perf_counter()
        lab_front = front_features(enc, lab_w)
        test_front = front_features(enc, test_w)
        lab_feat = back_features(enc, lab_front, ctc.layer)
        test_feat = back_features(enc, test_front, ctc.layer)
        timing[f"features_{name}"] = time.perf_counter() - t0
        rows.append({"seed": seed, "encoder": name, "method": "speaker_probe", "layer": ctc.layer,
                     **speaker_probe(pooled(lab_feat), lab_spk, pooled(test_feat), test_spk, seed)})
        for m in minutes:
            n = subsets[m]
            vocab = CharVocab.from_texts(lab_txt[:n])
            t0 = time.perf_counter()
            res, head = train_ctc_probe(lab_feat[:n], lab_txt[:n], test_feat, test_txt, vocab, ctc.probe_epochs,
                                        ctc.probe_lr, ctc.batch_size, seed, return_head=True)
            add(name, "ctc_probe", m, res, time.perf_counter() - t0)
            t0 = time.perf_counter()
            res = finetune_ctc(copy.deepcopy(enc), lab_front[:n], lab_txt[:n], test_front, test_txt, vocab,
                               layer=ctc.layer, freeze_encoder=False, epochs=ctc.finetune_epochs, lr=ctc.finetune_lr,
                               head_lr=ctc.finetune_head_lr, batch_size=ctc.batch_size, seed=seed,
                               mask_time_prob=ctc.mask_time_prob, mask_time_length=ctc.mask_time_length,
                               init_head=head if ctc.finetune_from_probe else None)
            add(name, "finetune", m, res, time.perf_counter() - t0)
    for r in rows:
        r.setdefault("timing", None)
    rows.append({"seed": seed, "encoder": "-", "method": "timing", **{k: round(v, 1) for k, v in timing.items()},
                 "trivial_cer": trivial_references(test_txt), "n_test_clips": len(test_items), "test_minutes": round(sum(it.duration or 0 for it in test_items) / 60, 2),
                 "test_levels": sorted({it.group for it in test_items}),
                 "params": {k: sum(p.numel() for p in e.parameters()) for k, e in encoders.items()}})
    return rows


def summarize(path: Path) -> str:
    rows = json.loads(path.read_text())["rows"]
    seeds = sorted({r["seed"] for r in rows})
    table = defaultdict(list)
    for r in rows:
        if r["method"] in ("ctc_probe", "finetune"):
            table[(r["encoder"], r["method"], r["label_minutes"])].append((r["seed"], r["cer"], r["wer"]))
    minutes = sorted({k[2] for k in table})
    order = [(e, m) for e in ("floor:mfcc", "floor:logmel") for m in ("ctc_probe",)] + \
            [(e, m) for m in ("ctc_probe", "finetune") for e in ENCODERS]
    lines = [f"CER (WER), mean +- std over seeds {seeds}", "",
             "| encoder | method | " + " | ".join(f"{m:g} min CER" for m in minutes) + " | "
             + " | ".join(f"{m:g} min WER" for m in minutes) + " |",
             "|---|---|" + "---|" * (2 * len(minutes))]
    for e, meth in order:
        if not any((e, meth, m) in table for m in minutes):
            continue
        cer = [np.array([v[1] for v in table[(e, meth, m)]]) for m in minutes]
        wer = [np.array([v[2] for v in table[(e, meth, m)]]) for m in minutes]
        lines.append(f"| {e} | {meth} | " + " | ".join(f"{c.mean():.3f} ± {c.std(ddof=1) if len(c) > 1 else 0:.3f}" for c in cer)
                     + " | " + " | ".join(f"{w.mean():.3f} ± {w.std(ddof=1) if len(w) > 1 else 0:.3f}" for w in wer) + " |")
    lines += ["", "Paired CER differences per seed (negative = first is better):", ""]
    for meth in ("ctc_probe", "finetune"):
        for a, b in (("continued", "base"), ("continued", "random_init"), ("base", "random_init")):
            for m in minutes:
                da = dict((s, c) for s, c, _ in table.get((a, meth, m), []))
                db = dict((s, c) for s, c, _ in table.get((b, meth, m), []))
                d = np.array([da[s] - db[s] for s in seeds if s in da and s in db])
                if len(d):
                    lines.append(f"- {meth} {m:g} min, {a} - {b}: {d.mean():+.3f} ± {d.std(ddof=1) if len(d) > 1 else 0:.3f} "
                                 f"({int((d < 0).sum())}/{len(d)} seeds better)")
    spk = defaultdict(list)
    for r in rows:
        if r["method"] == "speaker_probe":
            spk[r["encoder"]].append((r["accuracy"], r.get("balanced_accuracy", float("nan")), r["n_test"], len(r["classes"])))
    lines += ["", "Speaker ID (linear probe, class-balanced; train = largest labelled subset, test = held-out levels):", "",
              "| encoder | accuracy | balanced accuracy | test clips | classes |", "|---|---|---|---|---|"]
    for e, v in spk.items():
        a = np.array([x[0] for x in v]); b = np.array([x[1] for x in v])
        lines.append(f"| {e} | {a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0:.3f} | "
                     f"{b.mean():.3f} ± {b.std(ddof=1) if len(b) > 1 else 0:.3f} | {v[0][2]} | {v[0][3]} |")
    timing = [r for r in rows if r["method"] == "timing"]
    if timing:
        lines += ["", "Timing (s) per seed: " + "; ".join(
            f"seed {t['seed']}: " + ", ".join(f"{k} {v}" for k, v in t.items() if k.startswith(("pretrain", "decode", "features")))
            for t in timing),
            f"CER of hypotheses that recognise nothing (word count from the reference): {timing[0].get('trivial_cer')}",
            f"Parameters: {timing[0]['params']}; test: {timing[0]['n_test_clips']} clips, {timing[0]['test_minutes']} min, "
            f"{len(timing[0]['test_levels'])} levels"]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="experiments/speech/wav2vec2_czech.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--base-steps", type=int, default=300)
    p.add_argument("--out", default="runs/speech_czech")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for both stages, e.g. train.steps=5 data.ctc.label_minutes=[1,2]")
    p.add_argument("--summarize", type=Path, default=None, help="print the table of an existing czech_asr.json")
    args = p.parse_args()
    if args.summarize:
        print(summarize(args.summarize))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result_file = out / "czech_asr.json"
    rows: List[Dict[str, Any]] = []
    t_all = time.perf_counter()
    for seed in args.seeds:
        rows.extend(run_seed(args.config, seed, args, out))
        result_file.write_text(json.dumps({"args": vars(args) | {"summarize": None}, "rows": rows}, indent=1, default=str))
    log.info("total %.0f s", time.perf_counter() - t_all)
    print(summarize(result_file))


if __name__ == "__main__":
    main()
