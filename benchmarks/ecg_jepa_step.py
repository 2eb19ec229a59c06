"""ECG-JEPA training step: sslab vs the original ECG-JEPA code's CPU path, same model, same batches, alternated.

    python benchmarks/ecg_jepa_step.py                       # reference shapes, 1 thread, 6 rounds
    python benchmarks/ecg_jepa_step.py --rounds 10 --threads 2
    python benchmarks/ecg_jepa_step.py --sslab-only          # sslab's ms/step and GFLOP/s only

Shapes (the original ViTXS_ptbxl configuration): batch 16, 12 leads x 5000 samples (10 s at 500 Hz), patch 25
(200 patches, 40 kept as context, 160 targets), encoder ViT-XS dim 192 / depth 8 / 4 heads, predictor
96 / 8 / 4, one register token, no biases, LayerNorm eps 1e-6, L1 loss on raw targets, fp32, CPU.

**Baseline.** The original code (kweimann/ECG-JEPA, MIT) is not part of this repository.  ``ReferenceJEPA`` below is
a re-implementation of its training step written from the conventions in
``../shared/data/reference/ecg_jepa/README.md`` and the structure of the original's CPU path: attention computed
by hand (``softmax(q k^T * scale) v``; the original uses ``scaled_dot_product_attention`` only on CUDA), the
Conv1d patch embedding over all patches before the context gather, ``repeat``-ed index tensors for the gathers,
the EMA update as ``param.data = m * target + (1 - m) * encoder`` per parameter at the start of every forward,
and ``torch.optim.AdamW(fused=False)`` (on CPU that is the per-parameter loop).
``tests/ecg/test_ecg_jepa_parity.py::test_benchmark_baseline_is_the_reference_function`` checks that it
reproduces the original's losses and weights on the shared fixture, so the ratio compares equal functions.

**sslab side.** ``vit1d`` + ``jepa`` in the reference configuration, trained by sslab's ``Trainer.train_step``
(schedules, non-finite check, logging scalars, AdamW with sslab's parameter groups, EMA), ``clip_grad`` off as in
the reference.  Steps alternate (reference, sslab, reference, ...) in one process so that machine load hits both;
the ratio is of the medians, of wall-clock time and of the process's CPU time (``time.process_time``: with one
thread the time the step actually ran, robust to other jobs preempting it on a shared machine).  FLOPs of one step come from ``torch.utils.flop_counter.FlopCounterMode``.
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
import time
from typing import Dict, Iterator, List

import torch
import torch.nn.functional as F
from torch import nn


# ----------------------------------------------------------------------------- baseline (re-implementation)
def _pos_table(dim: int, n: int) -> torch.Tensor:
    pos = torch.arange(n).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, n, dim)
    table[0, :, 0::2] = torch.sin(pos * freq)
    table[0, :, 1::2] = torch.cos(pos * freq)
    return table


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, idx.unsqueeze(-1).repeat(1, 1, x.size(-1)))


class _RefAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _RefMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden, bias=False), nn.GELU(), nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _RefBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, bias=False)
        self.attn = _RefAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, bias=False)
        self.mlp = _RefMLP(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv1d(in_chans, dim, kernel_size=patch, stride=patch, bias=False)


class _RefViT(nn.Module):
    def __init__(self, n: int, in_chans: int, patch: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.patch_embed = _PatchEmbed(in_chans, dim, patch)
        self.register_buffer("pos_embed", _pos_table(dim, n), persistent=False)
        self.registers = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(_RefBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.patch_embed.proj(x).transpose(1, 2)
        x = x + self.pos_embed[:, :x.shape[1]]
        if mask is not None:
            x = _take(x, mask)
        x = torch.cat([self.registers.repeat(x.shape[0], 1, 1), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 1:]


class _RefPredictor(nn.Module):
    def __init__(self, n: int, dim: int, pred_dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.embed = nn.Linear(dim, pred_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pred_dim))
        self.register_buffer("pos_embed", _pos_table(pred_dim, n), persistent=False)
        self.blocks = nn.ModuleList(_RefBlock(pred_dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(pred_dim, eps=1e-6, bias=False)
        self.proj = nn.Linear(pred_dim, dim, bias=False)

    def forward(self, z: torch.Tensor, ctx: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        b, k = tgt.shape
        pos = self.pos_embed.repeat(b, 1, 1)
        x = self.embed(z) + _take(pos, ctx)
        m = self.mask_token.repeat(b, k, 1) + _take(pos, tgt)
        x = torch.cat([x, m], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.proj(self.norm(x)[:, -k:])


class ReferenceJEPA(nn.Module):
    """The original ECG-JEPA training step (CPU path), re-implemented; see the module docstring."""

    def __init__(self, n_patches: int, in_chans: int = 12, patch: int = 25, dim: int = 192, depth: int = 8,
                 heads: int = 4, pred_dim: int = 96, pred_depth: int = 8, pred_heads: int = 4, steps: int = 100_000,
                 momentum=(0.998, 0.9995)) -> None:
        super().__init__()
        self.encoder = _RefViT(n_patches, in_chans, patch, dim, depth, heads)
        self.predictor = _RefPredictor(n_patches, dim, pred_dim, pred_depth, pred_heads)
        self.target_encoder = copy.deepcopy(self.encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad = False
        self._momentum = (momentum[0] + (momentum[1] - momentum[0]) * i / steps for i in range(steps + 1))

    @torch.no_grad()
    def _ema(self) -> None:
        m = next(self._momentum)
        for z, h in zip(self.encoder.parameters(), self.target_encoder.parameters()):
            h.data = m * h.data + (1.0 - m) * z.data

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self._ema()
            h = _take(self.target_encoder(x), tgt)
        z = self.predictor(self.encoder(x, ctx), ctx, tgt)
        return torch.mean(torch.abs(z - h))

    def optimizer(self, lr: float = 1e-3, weight_decay: float = 0.01) -> torch.optim.AdamW:
        decay = {f"{mn}.{pn}" if mn else pn for mn, m in self.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d))
                 for pn, p in m.named_parameters(recurse=False) if pn.endswith("weight") and p.requires_grad}
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
                  {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.0, fused=False)


# ----------------------------------------------------------------------------- sslab side
def sslab_reference_config(args: argparse.Namespace, out_dir: str) -> Dict:
    """The reference model as an sslab experiment (only encoder / objective / optim / train are used here)."""
    return {"name": "ecg_jepa_step", "output_dir": out_dir, "modality": "ecg",
            "encoder": {"name": "vit1d", "in_chans": 12, "patch_size": args.patch, "dim": args.dim,
                        "depth": args.depth, "heads": args.heads, "num_registers": 1, "bias": False, "norm_eps": 1e-6},
            "objective": {"name": "jepa", "predictor_dim": args.pred_dim, "predictor_depth": args.depth,
                          "predictor_heads": args.heads, "loss": "l1", "target_norm": "none", "ema_at": "forward",
                          "token_weight_decay": False},
            "optim": {"lr": 1e-3, "schedule": "constant", "weight_decay": 0.01, "betas": [0.9, 0.99], "eps": 1e-6,
                      "clip_grad": None},
            "train": {"steps": 100_000, "batch_size": args.batch, "device": "cpu", "progress": False}}


def make_batches(args: argparse.Namespace, n: int, count: int = 4) -> List[Dict[str, torch.Tensor]]:
    from sslab.objectives.masking import BlockMasker1D

    masker = BlockMasker1D(min_block=10)
    out = []
    for _ in range(count):
        ctx, tgt = zip(*(masker(n, args.keep) for _ in range(args.batch)))
        out.append({"inputs": torch.randn(args.batch, 12, n * args.patch), "context_idx": torch.stack(ctx),
                    "target_idx": torch.stack(tgt)})
    return out


def step_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--patch", type=int, default=25)
    ap.add_argument("--keep", type=int, default=40, help="context patches per record")
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--pred-dim", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=6, help="timed steps per side (after 2 warm-up steps each)")
    ap.add_argument("--sslab-only", action="store_true")
    args = ap.parse_args()

    from sslab.core.config import ExperimentConfig, from_dict
    from sslab.core.export import build_encoder
    from sslab.core.registry import OBJECTIVES
    from sslab.core.trainer import Trainer
    from sslab.importers.ecg_jepa import reference_key_to_sslab

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.samples // args.patch
    ref = ReferenceJEPA(n, 12, args.patch, args.dim, args.depth, args.heads, args.pred_dim, args.depth, args.heads)
    ref_opt = ref.optimizer()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = from_dict(ExperimentConfig, sslab_reference_config(args, tmp))
        spec = dict(cfg.objective)
        obj = OBJECTIVES.build(spec.pop("name"), encoder=build_encoder(cfg.encoder), **spec)
        obj.load_state_dict({reference_key_to_sslab(k): v for k, v in ref.state_dict().items()}, strict=True)
        trainer = Trainer(obj, list(range(args.batch)), None, cfg, tmp)
        batches = make_batches(args, n)

        def ref_step(b: Dict[str, torch.Tensor]) -> float:
            loss = ref(b["inputs"], b["context_idx"], b["target_idx"])
            loss.backward()
            ref_opt.step()
            ref_opt.zero_grad(set_to_none=True)
            return float(loss.detach())

        def sslab_step(b: Dict[str, torch.Tensor]) -> float:
            return trainer.train_step(iter([b]))["loss"]

        flops = step_flops(lambda: sslab_step(batches[0]))
        sides = {"sslab": sslab_step} if args.sslab_only else {"reference": ref_step, "sslab": sslab_step}
        if not args.sslab_only:
            step_flops(lambda: ref_step(batches[0]))  # keep both models at the same step count
        times: Dict[str, List[float]] = {k: [] for k in sides}
        cpu: Dict[str, List[float]] = {k: [] for k in sides}
        for r in range(args.rounds + 2):
            for name, fn in sides.items():
                t, c = time.perf_counter(), time.process_time()
                fn(batches[r % len(batches)])
                if r >= 2:
                    times[name].append(time.perf_counter() - t)
                    cpu[name].append(time.process_time() - c)
    n_params = sum(p.numel() for p in obj.encoder.parameters())
    print(f"ECG-JEPA step: batch {args.batch}, 12 x {args.samples} samples, patch {args.patch} ({n} patches, "
          f"{args.keep} kept), encoder {args.dim}/{args.depth}/{args.heads} ({n_params / 1e6:.2f}M), predictor "
          f"{args.pred_dim}/{args.depth}/{args.heads}, fp32, CPU, {args.threads} thread(s), {args.rounds} rounds")
    print(f"FLOPs per step (FlopCounterMode, sslab): {flops / 1e9:.1f} GFLOP")
    for label, data in (("wall", times), ("CPU", cpu)):
        med = {k: statistics.median(v) for k, v in data.items()}
        for name, t in med.items():
            spread = f"min {min(data[name]) * 1e3:.0f} / max {max(data[name]) * 1e3:.0f}"
            print(f"{name:>9} {label:>4}: {t * 1e3:8.1f} ms/step (median; {spread})  {flops / t / 1e9:6.1f} GFLOP/s")
        if "reference" in med:
            ratios = [a / b for a, b in zip(data["reference"], data["sslab"])]
            print(f"speed-up sslab vs reference ({label} time): {med['reference'] / med['sslab']:.2f}x "
                  f"(ratio of medians; per-round ratios {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
