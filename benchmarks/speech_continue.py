"""Continued pretraining benchmark: base checkpoint vs after continued pretraining on the shared clips.

1. "base": a tiny wav2vec 2.0 (``tiny_config``) pretrained for ``--base-steps`` on generated
   speech-like audio, saved in HF format (what a user's XLS-R folder would be);
2. "continued": ``--continue-steps`` of continued pretraining from that HF folder on the shared clips
   (../shared/data/speech), fresh optimizer;
3. the wav2vec 2.0 loss on a fixed batch of shared clips (eval mode, fixed masks/distractors) and the
   speaker-ID linear probe / kNN on the shared clips (split by utterance) for random init, base and
   continued.

Run: ``.venv/bin/python benchmarks/speech_continue.py --base-steps 200 --continue-steps 100``
(CPU, minutes). Prints a table and writes ``<out>/speech_continue.json``.

The probe here is ONE split (~50 test chunks, binomial s.e. ~0.065) and one seed: a pipeline check, not a
measurement. For the paired comparison over model seeds and repeated grouped CV (same chunks and folds
for all three models, layer sweep, MFCC reference) use ``sslab compare`` (``probe.cv`` for grouped CV).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from sslab.core.config import load_experiment
from sslab.core.data import seeded_rng
from sslab.encoders.wav2vec2 import Wav2Vec2Encoder, tiny_config
from sslab.modalities.speech import SpeechModality
from sslab.objectives.wav2vec2 import Wav2Vec2Objective
from sslab.run import pretrain, probe_encoders


def experiment(name: str, out: Path, source: str, encoder: list, steps: int, args: argparse.Namespace) -> object:
    return load_experiment(None, [
        f"name={name}", "modality=speech", f"output_dir={out}", f"seed={args.seed}",
        f"data.source={source}", f"data.shared_data={args.shared_data}", f"data.max_seconds={args.max_seconds}",
        "data.probe_tasks=[speaker]", f"data.probe_layer={args.probe_layer}", "data.probe_seconds=2.0",
        f"data.synthetic={{num_speakers: 8, utts_per_speaker: 8, min_seconds: {args.max_seconds * 2 / 3:.3f}, "
        f"max_seconds: {args.max_seconds}}}",
        "encoder.name=wav2vec2", *encoder, "objective.name=wav2vec2",
        f"train.steps={steps}", f"train.batch_size={args.batch_size}", "train.log_every=10",
        f"optim.lr={args.lr}", f"optim.warmup_steps={max(1, steps // 10)}", "optim.weight_decay=0.01",
        "probe.knn_k=5",
    ])


def eval_loss(encoder: Wav2Vec2Encoder, batch: dict) -> dict:
    obj = Wav2Vec2Objective(encoder).eval()
    with torch.no_grad():
        out = obj(batch)
    return {k: round(float(out[k]), 4) for k in ("loss", "contrastive_loss", "diversity_loss", "accuracy", "code_perplexity")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-steps", type=int, default=200)
    p.add_argument("--continue-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-seconds", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--probe-layer", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shared-data", default="../shared/data")
    p.add_argument("--out", default="runs/bench_speech_continue")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (oversubscribed cores crawl)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    torch.manual_seed(args.seed)
    cfg_json = json.dumps(tiny_config())
    t0 = time.perf_counter()
    base_run = pretrain(experiment("base", out, "synthetic", [f"encoder.config={cfg_json}"], args.base_steps, args))
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    cont_cfg = experiment("continued", out, "shared", [f"encoder.pretrained={base_run / 'hf'}"], args.continue_steps, args)
    cont_run = pretrain(cont_cfg)
    t_cont = time.perf_counter() - t0

    modality = SpeechModality(cont_cfg)
    ds, collate = modality.pretrain_data()
    with seeded_rng(1234):
        batch = collate([ds[i] for i in range(0, len(ds), 2)])
    torch.manual_seed(args.seed)
    random_init = Wav2Vec2Encoder(config=tiny_config())
    encoders = {"random_init": random_init, "base": Wav2Vec2Encoder(pretrained=str(base_run / "hf")),
                "continued": Wav2Vec2Encoder(pretrained=str(cont_run / "hf"))}
    losses = {name: eval_loss(enc, batch) for name, enc in encoders.items()}
    rows = probe_encoders(modality, encoders, cont_cfg, progress=False)
    result = {"args": vars(args), "seconds": {"base": round(t_base, 1), "continued": round(t_cont, 1)},
              "eval_loss_shared_batch": losses,
              "speaker_probe": [{k: r[k] for k in ("encoder", "accuracy", "macro_f1", "knn_accuracy", "n_train", "n_test")
                                 if k in r} for r in rows]}
    (out / "speech_continue.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
