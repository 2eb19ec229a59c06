"""Step time of our wav2vec 2.0 objective vs a plain loop around ``Wav2Vec2ForPreTraining`` (same batch).

Both loops: same model weights, same waveforms, same masks (p=0.65, span 10) and distractors, AdamW,
forward + backward + step. "ours" = ``Wav2Vec2Objective`` (mean-normalised loss, bmm+gather logits,
code-index duplicate check, metrics incl. code perplexity, Gumbel anneal in ``on_step_end``);
"plain" = ``model(input_values, attention_mask, mask_time_indices, sampled_negative_indices).loss``
(HF's loss, sum-reduced, divided by the masked count). Steps alternate (ours, plain, ours, ...)
so that machine load affects both alike; the median is reported.

Run: ``.venv/bin/python benchmarks/speech_step_time.py --steps 10`` (tiny model on the shared clips, CPU).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from sslab.core.data import seeded_rng
from sslab.datasets.audio import AudioCollator, AudioDataset, read_manifest
from sslab.datasets.audio_synthetic import SyntheticSpeechDataset
from sslab.encoders.wav2vec2 import Wav2Vec2Encoder, tiny_config
from sslab.objectives.wav2vec2 import Wav2Vec2Objective


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-seconds", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shared-data", default="../shared/data")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    manifest = Path(args.shared_data) / "speech" / "transcripts.tsv"
    if manifest.is_file():
        ds = AudioDataset(read_manifest(manifest), max_seconds=args.max_seconds, cache=True)
        source = str(manifest)
    else:
        ds = SyntheticSpeechDataset(num_speakers=4, utts_per_speaker=4)
        source = "generated audio"
    torch.manual_seed(0)
    ours_obj = Wav2Vec2Objective(Wav2Vec2Encoder(config=tiny_config()))
    plain_model = copy.deepcopy(ours_obj.encoder.model)
    collate = ours_obj.make_collator(AudioCollator("pad"))
    with seeded_rng(0):
        batch = collate([ds[i] for i in range(args.batch_size)])
    N = batch["mask_time_indices"].shape[1]
    hf_neg = batch["negative_indices"].clamp(min=0) + torch.arange(args.batch_size)[:, None, None] * N
    n_masked = int(batch["mask_time_indices"].sum())
    opt_ours = torch.optim.AdamW([q for q in ours_obj.parameters() if q.requires_grad], lr=1e-4)
    opt_plain = torch.optim.AdamW(plain_model.parameters(), lr=1e-4)
    ours_obj.train()
    plain_model.train()

    def step_ours(i: int) -> float:
        t = time.perf_counter()
        out = ours_obj(batch)
        opt_ours.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(ours_obj.parameters(), 1.0)
        opt_ours.step()
        ours_obj.on_step_end(i + 1, args.steps)
        return time.perf_counter() - t

    def step_plain(i: int) -> float:
        t = time.perf_counter()
        out = plain_model(batch["input_values"], attention_mask=batch["attention_mask"],
                          mask_time_indices=batch["mask_time_indices"], sampled_negative_indices=hf_neg)
        loss = out.loss / n_masked
        opt_plain.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain_model.parameters(), 1.0)
        opt_plain.step()
        return time.perf_counter() - t

    for i in range(2):  # warm-up
        step_ours(i)
        step_plain(i)
    t_ours, t_plain = [], []
    for i in range(args.steps):
        t_ours.append(step_ours(i))
        t_plain.append(step_plain(i))
    mo, mp = statistics.median(t_ours), statistics.median(t_plain)
    print(f"data: {source}; batch {args.batch_size} x {batch['input_values'].shape[1] / 16000:.2f} s, "
          f"{N} frames, {n_masked} masked; tiny wav2vec2; torch threads {args.threads}; {args.steps} steps each")
    print(f"ours : median {mo * 1000:.1f} ms/step  (min {min(t_ours) * 1000:.1f})")
    print(f"plain: median {mp * 1000:.1f} ms/step  (min {min(t_plain) * 1000:.1f})")
    print(f"ratio ours/plain: {mo / mp:.3f} (median), {min(t_ours) / min(t_plain):.3f} (min)")


if __name__ == "__main__":
    main()
