"""POA training throughput on one GPU: ViT-S/16 at 224 px, bf16 autocast, images/s.

    python benchmarks/gpu/poa.py                      # ViT-S/16, 224 px, batch 64, 2x224 + 4x96 crops
    python benchmarks/gpu/poa.py --device cpu --img 32 --local 16 --batch 4 --steps 2 --warmup 1   # smoke

One optimizer step = EMA teacher on the global crops + intact student + elastic student (size sampled
per step) on all crops + AdamW + EMA update, i.e. the real ``sslab.objectives.poa.POA``. Also reports the
plain timm forward/backward of the same ViT-S for reference, and the peak memory.
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--local", type=int, default=96)
    ap.add_argument("--n-local", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--ibot", type=float, default=1.0)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()

    from sslab.core.export import build_encoder
    from sslab.objectives.poa import POA

    dev = torch.device(args.device)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    encoder = build_encoder({"name": "elastic_vit", "arch": "vit_small_patch16_224", "img_size": args.img,
                             "patch_size": 16, "in_chans": 3, "drop_path_rate": 0.1})
    obj = POA(encoder, out_dim=65536 if dev.type == "cuda" else 1024, head_hidden=2048, head_bottleneck=256,
              widths=[192, 256, 320, 384], depths=[6, 8, 10, 12], ibot_weight=args.ibot,
              koleo_weight=0.1).to(dev)
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=1e-4, fused=dev.type == "cuda")
    step_fn = torch.compile(obj) if args.compile else obj

    def batch():
        views = [torch.randn(args.batch, 3, args.img, args.img, device=dev) for _ in range(2)]
        views += [torch.randn(args.batch, 3, args.local, args.local, device=dev) for _ in range(args.n_local)]
        return {"views": views, "n_global": 2}

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    data = batch()
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            sync()
            t0 = time.perf_counter()
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
        with torch.autocast(**amp):
            loss = step_fn(data)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        obj.on_step_end(i + 1, args.warmup + args.steps)
    sync()
    poa_s = (time.perf_counter() - t0) / args.steps

    # reference: plain ViT-S forward+backward on the two global crops only
    plain = obj.encoder.model
    x = torch.randn(2 * args.batch, 3, args.img, args.img, device=dev)
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            sync()
            t1 = time.perf_counter()
        with torch.autocast(**amp):
            out = plain.forward_features(x).float().mean()
        out.backward()
    sync()
    plain_s = (time.perf_counter() - t1) / args.steps
    result = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "model": "ViT-S/16", "img": args.img, "batch": args.batch, "crops": f"2x{args.img} + {args.n_local}x{args.local}",
        "precision": "bf16" if dev.type == "cuda" else "fp32",
        "poa_step_s": round(poa_s, 4), "poa_images_per_s": round(args.batch / poa_s, 1),
        "plain_fwd_bwd_global_crops_images_per_s": round(2 * args.batch / plain_s, 1),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
