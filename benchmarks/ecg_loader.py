"""ECG loader throughput (records/s): uncached WFDB decoding vs the memmap cache vs synthetic crops,
against the rate at which a JEPA training step consumes samples on this CPU.

    python benchmarks/ecg_loader.py [--data ../shared/data/ecg/ptbxl] [--steps 10] [--batch 32]

Uses the PTB-XL folder's 100 Hz records (12 leads, 10 s); crops 2.5 s; model = a vit1d of the demo's
size (dim 64, depth 4, patch 5; the demo itself now uses 10 s crops of 20-sample patches, the same 50 tokens).  Prints one table; ratios > 1 mean the loader outruns training (single process).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def rate(fn, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/ecg/ptbxl"))
    ap.add_argument("--records", type=int, default=120)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from sslab.datasets.ecg_cache import CachedCrops, ECGRecordCache
    from sslab.datasets.ecg_ptbxl import PTBXL
    from sslab.datasets.ecg_synthetic import SyntheticECG, SyntheticECGConfig, generate
    from sslab.datasets.ecg_wfdb import LEADS_12, LeadNorm, random_crop, read_record
    from sslab.encoders.vit1d import ViT1D
    from sslab.objectives.jepa import JEPA
    from sslab.objectives.masking import BlockMasker1D, JEPACollator1D

    recs = PTBXL(args.data).split(range(1, 11)).records[: args.records]
    n = len(recs)
    norm = LeadNorm.identity(12, 5.0)
    uncached = rate(lambda i: random_crop(norm(read_record(recs[i], LEADS_12, 100).signal), 250), n)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cache = ECGRecordCache(recs, tmp, LEADS_12, 100, workers=1, progress=False)
        build = n / (time.perf_counter() - t)
        ds = CachedCrops(cache, cache.valid_indices, 250, norm)
        cached = rate(lambda i: ds[i % n], 20 * n)
    sig, lab = generate(SyntheticECGConfig(n_records=64), tmp_dir := tempfile.mkdtemp(), workers=1, progress=False)
    syn = SyntheticECG(sig, lab, range(64), crop=250, norm=norm)
    synthetic = rate(lambda i: syn[i % 64], 20 * 64)
    t = time.perf_counter()
    generate(SyntheticECGConfig(n_records=32, seed=1), tmp_dir, workers=1, progress=False)
    gen = 32 / (time.perf_counter() - t)

    obj = JEPA(ViT1D(patch_size=5, dim=64, depth=4, heads=4))
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=1e-3)
    col = JEPACollator1D(BlockMasker1D(), 5)
    batch = col([ds[i % n] for i in range(args.batch)])

    def step(i):
        loss = obj(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.on_step_end(i + 1, 100)

    step(0)
    train = rate(step, args.steps) * args.batch
    print(f"| what | records (samples)/s | vs JEPA step |\n|---|---|---|")
    for name, r in [("WFDB decode + crop (uncached)", uncached), ("memmap cache build (1 process)", build),
                    ("memmap cache crop (cached)", cached), ("synthetic crop (cached)", synthetic),
                    ("synthetic generation (1 process)", gen), ("JEPA train step consumes", train)]:
        print(f"| {name} | {r:.0f} | {r / train:.1f}x |")
    print(f"\n({n} PTB-XL records at 100 Hz, batch {args.batch}, torch threads {args.threads})")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
