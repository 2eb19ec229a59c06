"""ECG-JEPA training throughput on one GPU: ViT-B (85M) context encoder, batch 256, bf16.

    python benchmarks/gpu/ecg_jepa.py [--size b] [--batch 256] [--steps 30] [--compile] [--peak-tflops 989]
    python benchmarks/gpu/ecg_jepa.py --device cpu --size xs --batch 4 --steps 1 --warmup 1   # CPU smoke check

Inputs are 12-lead 2.5 s crops at 500 Hz (1250 samples, 50 patches of 25); masks come from the real
collator (BlockMasker1D, context 15-25 %, target blocks >= 10 patches).  FLOPs of one full step
(EMA-target forward, context encoder + predictor forward/backward) are counted with
``torch.utils.flop_counter.FlopCounterMode``; MFU = achieved FLOP/s / peak (default 989 TFLOP/s:
H100/H200 dense bf16).  Prints samples/s, step time, TFLOP/s and MFU.
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="b")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--fs", type=int, default=500)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--device", default="cuda", help="cpu: smoke check only (fp32, no MFU meaning)")
    args = ap.parse_args()

    from sslab.encoders.vit1d import ViT1D
    from sslab.objectives.jepa import JEPA
    from sslab.objectives.masking import BlockMasker1D, JEPACollator1D

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu/ecg_jepa.py needs a CUDA GPU (or --device cpu for a smoke check)")
    torch.backends.cuda.matmul.allow_tf32 = True
    patch = 25 * args.fs // 500
    crop = int(2.5 * args.fs)
    enc = ViT1D(in_chans=12, patch_size=patch, size=args.size)
    obj = JEPA(enc).to(dev)
    n_params = sum(p.numel() for p in enc.parameters())
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.99),
                            fused=cuda)
    col = JEPACollator1D(BlockMasker1D(min_block=10), patch)
    batches = [col([torch.randn(12, crop) for _ in range(args.batch)]) for _ in range(4)]
    batches = [{k: v.to(dev, non_blocking=True) for k, v in b.items()} for b in batches]
    fwd = torch.compile(obj) if args.compile else obj

    def step(b, i):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            loss = fwd(b)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        obj.on_step_end(i + 1, 1000)

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step(batches[0], 0)
    flops = fc.get_total_flops()
    for i in range(args.warmup):
        step(batches[i % 4], i)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    t = time.perf_counter()
    for i in range(args.steps):
        step(batches[i % 4], i)
    sync()
    dt = (time.perf_counter() - t) / args.steps
    tflops = flops / dt / 1e12
    name = torch.cuda.get_device_name() if cuda else "CPU (smoke check, fp32)"
    print(f"ViT1D-{args.size} ({n_params / 1e6:.1f}M params), batch {args.batch}, bf16={cuda}, compile={args.compile}, "
          f"{name}")
    print(f"step {dt * 1000:.1f} ms | {args.batch / dt:.0f} samples/s | {flops / 1e12:.2f} TFLOP per step | "
          f"{tflops:.1f} TFLOP/s | MFU {100 * tflops / args.peak_tflops:.1f}% of {args.peak_tflops:.0f}")
    if cuda:
        print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
