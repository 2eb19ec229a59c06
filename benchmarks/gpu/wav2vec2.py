"""GPU throughput of wav2vec 2.0 pretraining with our objective: base size, bf16, batch 16 x 15 s.

Model: ``Wav2Vec2Config()`` defaults = wav2vec 2.0 BASE (7-layer conv 512, 12 x 768 transformer,
2 x 320 codewords, 95 M parameters), random init (no network). Audio: generated speech-like clips
(``SyntheticSpeechDataset``), 15 s each; masks p=0.65 span 10, 100 distractors, drawn by the collator
once (the timing is of the GPU step). Each step: bf16 autocast forward, backward, grad clip, AdamW,
Gumbel anneal. Also times the plain HF loop on the same batch for the ratio.

Run on a GPU machine: ``python benchmarks/gpu/wav2vec2.py`` (about a minute).
CPU smoke check: ``python benchmarks/gpu/wav2vec2.py --device cpu --tiny --batch-size 2 --seconds 1 --steps 1``.
Prints samples/s, audio hours per hour of compute, peak memory.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from sslab.datasets.audio import AudioCollator
from sslab.datasets.audio_synthetic import SyntheticSpeechDataset
from sslab.encoders.wav2vec2 import Wav2Vec2Encoder, tiny_config
from sslab.objectives.wav2vec2 import Wav2Vec2Objective


def timed(fn, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(steps):
        fn(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="tiny config (smoke test) instead of BASE")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    enc = Wav2Vec2Encoder(config=tiny_config() if args.tiny else {})
    obj = Wav2Vec2Objective(enc).to(device).train()
    n_params = sum(q.numel() for q in enc.parameters())
    ds = SyntheticSpeechDataset(num_speakers=args.batch_size, utts_per_speaker=1,
                                min_seconds=args.seconds, max_seconds=args.seconds)
    collate = obj.make_collator(AudioCollator("pad"))
    batch = collate([ds[i] for i in range(args.batch_size)])
    batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if not args.fp32 else torch.autocast(device.type, enabled=False))
    opt = torch.optim.AdamW([q for q in obj.parameters() if q.requires_grad], lr=1e-4, fused=device.type == "cuda")

    def ours(i: int) -> None:
        with amp:
            out = obj(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(obj.parameters(), 1.0)
        opt.step()
        obj.on_step_end(i + 1, 1000)

    model = enc.model
    N = batch["mask_time_indices"].shape[1]
    hf_neg = batch["negative_indices"].clamp(min=0) + torch.arange(args.batch_size, device=device)[:, None, None] * N
    n_masked = batch["mask_time_indices"].sum()

    def plain(i: int) -> None:
        with amp:
            out = model(batch["input_values"], attention_mask=batch["attention_mask"],
                        mask_time_indices=batch["mask_time_indices"], sampled_negative_indices=hf_neg)
        opt.zero_grad(set_to_none=True)
        (out.loss / n_masked).backward()
        torch.nn.utils.clip_grad_norm_(obj.parameters(), 1.0)
        opt.step()

    timed(ours, args.warmup, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_ours = timed(ours, args.steps, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    timed(plain, args.warmup, device)
    t_plain = timed(plain, args.steps, device)
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "model": "tiny" if args.tiny else "wav2vec2-base (random init)", "params_M": round(n_params / 1e6, 1),
        "precision": "fp32" if args.fp32 else "bf16 autocast", "batch": f"{args.batch_size} x {args.seconds} s",
        "ours_s_per_step": round(t_ours, 4), "ours_samples_per_s": round(args.batch_size / t_ours, 2),
        "audio_hours_per_hour": round(args.batch_size * args.seconds / t_ours, 1),
        "plain_hf_s_per_step": round(t_plain, 4), "ratio_ours_over_plain": round(t_ours / t_plain, 3),
        "peak_mem_GiB_ours": round(peak, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
