"""MosaicBERT unpadded batches vs padded batches: MLM training step time on a realistic length spread.

Two copies of the same ``text_transformer`` (ALiBi + GeGLU, MosaicBERT's choices), identical weights,
one with ``unpad: true``. Every step both train on the *same* MLM batch (interleaved, so machine load
hits both alike); the script reports the median step time (forward + backward + AdamW), their ratio,
the fraction of padding in the batches, the largest loss difference between the two paths (they
compute the same function, so it should be ~1e-6) and, on one more batch, the matmul FLOPs of a
step on each path (they scale with the real tokens on the unpadded path).

Length sources:
* ``ptbxl``: the PTB-XL reports of ``../shared/data/ecg/ptbxl`` (random batches, padded to the longest
  report of the batch, as the text collators do);
* ``synthetic``: log-normal lengths (median ``--median-len``, sigma ``--sigma``) clipped to
  ``[8, --max-len]``, random token ids — a web-text-like spread with long tails.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/text_unpad.py --source ptbxl
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/text_unpad.py --source synthetic --max-len 256
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from typing import Any, Callable, Dict, List

import torch


def ptbxl_batches(args: argparse.Namespace) -> tuple[Callable[[int], Dict[str, torch.Tensor]], int]:
    from sslab.core.config import load_experiment
    from sslab.core.modality import build_modality

    cfg = load_experiment("experiments/text/mlm_ptbxl.yaml",
                          [f"data.shared_data={args.shared_data}", f"data.max_len={args.max_len}",
                           "output_dir=/tmp/sslab_text_unpad_bench"])
    modality = build_modality(cfg)
    ds, collate = modality.pretrain_data()
    g = torch.Generator().manual_seed(0)

    def batch(step: int) -> Dict[str, torch.Tensor]:
        idx = torch.randint(len(ds), (args.batch,), generator=g)
        torch.manual_seed(step)
        return collate([ds[int(i)] for i in idx])

    return batch, len(modality.tokenizer())


def synthetic_batches(args: argparse.Namespace) -> tuple[Callable[[int], Dict[str, torch.Tensor]], int]:
    from sslab.datasets.text_collate import IGNORE
    from sslab.datasets.text_tokenizer import NUM_SPECIAL

    vocab = 2000
    g = torch.Generator().manual_seed(0)

    def batch(step: int) -> Dict[str, torch.Tensor]:
        normal = torch.randn(args.batch, generator=g)
        lens = (args.median_len * torch.exp(args.sigma * normal)).round().clamp(8, args.max_len).long()
        L = int(lens.max())
        att = (torch.arange(L)[None] < lens[:, None]).long()
        ids = torch.randint(NUM_SPECIAL, vocab, (args.batch, L), generator=g) * att
        labels = torch.full_like(ids, IGNORE)
        sel = (torch.rand(ids.shape, generator=g) < 0.15) & att.bool()
        labels[sel] = ids[sel]
        return {"input_ids": ids, "attention_mask": att, "labels": labels}

    return batch, vocab


def count_flops(objs: Dict[str, Any], batch: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """Forward + backward matmul FLOPs (``aten.mm``/``addmm``/``bmm``: embeddings' and LM head's
    projections, QKV/out projections, FFN) of one MLM step on one batch, per path. ``FlopCounterMode``
    does not count CPU ``scaled_dot_product_attention``, so attention is left out on CPU."""
    from torch.utils.flop_counter import FlopCounterMode

    out: Dict[str, Any] = {"flops_batch_padding_fraction": round(1 - float(batch["attention_mask"].float().mean()), 4)}
    for name, obj in objs.items():
        with FlopCounterMode(display=False) as fc:
            obj(batch)["loss"].backward()
        obj.zero_grad(set_to_none=True)
        counts = fc.get_flop_counts().get("Global", {})
        mm = sum(v for k, v in counts.items() if str(k).split(".")[-1] in ("mm", "addmm", "bmm"))
        out[f"{name}_matmul_gflop"] = round(mm / 1e9, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", choices=["ptbxl", "synthetic"], default="ptbxl")
    ap.add_argument("--steps", type=int, default=40, help="timed steps per path (after --warmup)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--median-len", type=float, default=60.0, help="synthetic: median length")
    ap.add_argument("--sigma", type=float, default=0.7, help="synthetic: log-normal sigma")
    ap.add_argument("--shared-data", default="../shared/data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from sslab.encoders.text_transformer import TextTransformer
    from sslab.objectives.mlm import MLMObjective

    make_batch, vocab = (ptbxl_batches if args.source == "ptbxl" else synthetic_batches)(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    enc_kw = dict(vocab_size=vocab, dim=args.dim, depth=args.depth, heads=args.heads, max_len=args.max_len + 2,
                  position="alibi", ffn="geglu")
    objs, opts = {}, {}
    for name, unpad in (("padded", False), ("unpadded", True)):
        torch.manual_seed(0)
        objs[name] = MLMObjective(TextTransformer(unpad=unpad, **enc_kw)).to(device)
        opts[name] = torch.optim.AdamW(objs[name].parameters(), lr=1e-3)
    times: Dict[str, List[float]] = {"padded": [], "unpadded": []}
    real, total, max_dloss = 0, 0, 0.0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for step in range(args.warmup + args.steps):
        batch = {k: v.to(device) for k, v in make_batch(step).items()}
        att = batch["attention_mask"]
        losses: Dict[str, float] = {}
        order = ("padded", "unpadded") if step % 2 == 0 else ("unpadded", "padded")
        for name in order:
            obj, opt = objs[name], opts[name]
            sync()
            t = time.perf_counter()
            out = obj(batch)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            sync()
            if step >= args.warmup:
                times[name].append(time.perf_counter() - t)
            losses[name] = out["loss"].item()
        max_dloss = max(max_dloss, abs(losses["padded"] - losses["unpadded"]))
        if step >= args.warmup:
            real += int(att.sum())
            total += att.numel()
    n = args.warmup + args.steps
    # counted after the timing so that the timed batches do not depend on this extra one
    flops = count_flops(objs, {k: v.to(device) for k, v in make_batch(n).items()})
    med = {k: statistics.median(v) for k, v in times.items()}
    row: Dict[str, Any] = {
        "source": args.source, "device": device.type, "threads": args.threads, "batch": args.batch,
        "dim": args.dim, "depth": args.depth, "timed_steps": args.steps,
        "padding_fraction": round(1 - real / total, 4),
        "mean_real_tokens_per_seq": round(real / (args.steps * args.batch), 1),
        "mean_padded_len": round(total / (args.steps * args.batch), 1),
        "padded_step_ms": round(1000 * med["padded"], 2), "unpadded_step_ms": round(1000 * med["unpadded"], 2),
        "speedup_padded_over_unpadded": round(med["padded"] / med["unpadded"], 3),
        "max_abs_loss_diff": float(f"{max_dloss:.3g}"), **flops,
    }
    print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(row, fh, indent=2)


if __name__ == "__main__":
    main()
