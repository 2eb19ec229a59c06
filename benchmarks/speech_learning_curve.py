"""Does the tiny wav2vec 2.0 learn the contrastive task? A plain loop around our objective on generated audio.

64 generated utterances (8 speakers, 1-1.5 s), batches of 8 cropped to the shortest clip, AdamW
(constant lr), grad clip 1.0, Gumbel 2.0 -> 0.5 (geometric over the run). Prints contrastive loss and
accuracy (positive ranked first among 101; chance 0.0099, chance loss ln 101 = 4.615) every 20 steps.

Run: ``.venv/bin/python benchmarks/speech_learning_curve.py --steps 400 --lr 5e-3`` (CPU, ~3-10 min).
"""
from __future__ import annotations

import argparse
import time

import torch

from sslab.datasets.audio import AudioCollator
from sslab.datasets.audio_synthetic import SyntheticSpeechDataset
from sslab.encoders.wav2vec2 import Wav2Vec2Encoder, tiny_config
from sslab.objectives.wav2vec2 import Wav2Vec2Objective


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ds = SyntheticSpeechDataset(num_speakers=8, utts_per_speaker=8, min_seconds=1.0, max_seconds=1.5)
    clips = [ds[i] for i in range(len(ds))]
    obj = Wav2Vec2Objective(Wav2Vec2Encoder(config=tiny_config()))
    collate = obj.make_collator(AudioCollator("min"))
    opt = torch.optim.AdamW([q for q in obj.parameters() if q.requires_grad], lr=args.lr)
    t0 = time.perf_counter()
    window = []
    for step in range(args.steps):
        batch = collate([clips[i] for i in torch.randperm(len(clips))[:args.batch_size].tolist()])
        out = obj(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(obj.parameters(), 1.0)
        opt.step()
        obj.on_step_end(step + 1, args.steps)
        window.append((float(out["contrastive_loss"]), float(out["accuracy"]), float(out["code_perplexity"])))
        if (step + 1) % 20 == 0:
            c, a, ppl = (sum(v) / len(v) for v in zip(*window))
            print(f"step {step + 1:4d}  contrastive {c:.3f}  accuracy {a:.3f}  code ppl {ppl:.1f}  "
                  f"gumbel {float(obj.gumbel_temperature):.3f}  {time.perf_counter() - t0:.0f}s", flush=True)
            window = []


if __name__ == "__main__":
    main()
