"""Padding fraction of the core sampler's batches without and with length bucketing, on the shared clips.

Run: ``.venv/bin/python benchmarks/speech_bucketing.py [--max-seconds 15] [--batch-size 8] [--pool 100]``.
Lengths come from ``AudioDataset(validate="header").lengths`` (soundfile headers, nothing decoded), the
batches from ``sslab.core.data.ResumableBatchSampler`` exactly as ``train.length_bucketing`` builds them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sslab.core.data import ResumableBatchSampler
from sslab.datasets.audio import AudioDataset
from sslab.datasets.audio_sampling import padding_fraction


def mean_padding(lengths: list, batch_size: int, pool: int, epochs: int) -> float:
    sampler = ResumableBatchSampler(len(lengths), batch_size, seed=0, lengths=lengths if pool else None,
                                    bucket_pool=pool)
    fracs = []
    for epoch in range(epochs):
        sampler.set_position(epoch, 0)
        fracs.append(padding_fraction(lengths, [[i for i, _, _ in b] for b in sampler]))
    return sum(fracs) / len(fracs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-seconds", type=float, default=15.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--pool", type=int, default=100, help="train.length_bucketing (pool = batch_size * pool)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--shared-data", default="../shared/data")
    args = p.parse_args()
    ds = AudioDataset.from_manifest(Path(args.shared_data) / "speech" / "transcripts.tsv", validate="header",
                                    max_seconds=args.max_seconds)
    lengths = ds.lengths
    plain = mean_padding(lengths, args.batch_size, 0, args.epochs)
    buck = mean_padding(lengths, args.batch_size, args.pool, args.epochs)
    print(f"{len(lengths)} clips, crop {args.max_seconds} s, batch {args.batch_size}, "
          f"length_bucketing {args.pool}, mean over {args.epochs} epochs")
    print(f"padding fraction  random: {plain:.3f}   length-bucketed: {buck:.3f}")


if __name__ == "__main__":
    main()
