"""Padding fraction with random batches vs length-bucketed batches on the shared clips' durations.

Run: ``.venv/bin/python benchmarks/speech_bucketing.py [--max-seconds 15] [--batch-size 8]``.
Reads only headers (soundfile) of ../shared/data/speech; prints the padded share of each batching.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import soundfile as sf
import torch

from sslab.datasets.audio import read_manifest
from sslab.datasets.audio_sampling import LengthBucketBatchSampler, padding_fraction


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-seconds", type=float, default=15.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shared-data", default="../shared/data")
    args = p.parse_args()
    items = read_manifest(Path(args.shared_data) / "speech" / "transcripts.tsv")
    lengths = [min(int(sf.info(str(it.path)).duration * 16000), int(args.max_seconds * 16000)) for it in items]
    rand, buck = [], []
    for epoch in range(20):
        g = torch.Generator().manual_seed(epoch)
        perm = torch.randperm(len(lengths), generator=g).tolist()
        rand.append(padding_fraction(lengths, [perm[i:i + args.batch_size] for i in range(0, len(perm), args.batch_size)]))
        s = LengthBucketBatchSampler(lengths, args.batch_size, pool_factor=100, seed=0)
        s.set_epoch(epoch)
        buck.append(padding_fraction(lengths, s.batches()))
    print(f"{len(lengths)} clips, crop {args.max_seconds} s, batch {args.batch_size}, mean over 20 epochs")
    print(f"padding fraction  random: {sum(rand) / len(rand):.3f}   length-bucketed: {sum(buck) / len(buck):.3f}")


if __name__ == "__main__":
    main()
