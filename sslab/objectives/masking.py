"""Block maskers for JEPA (context / target patch indices), run in the collator on CPU workers.

* :class:`BlockMasker1D` -- ECG-JEPA (Weimann & Conrad 2024): the context keeps a fraction
  ``r ~ U(context_ratio)`` of the time patches; the targets are the rest, laid out as 1..``max_blocks``
  contiguous blocks of at least ``min_block`` patches (0.5 s = 10 patches at 50 ms/patch).
* :class:`BlockMasker2D` -- I-JEPA (Assran et al. 2023, sec. 3): ``n_targets`` rectangular target
  blocks (scale 0.15-0.2, aspect 0.75-1.5) and a context block (scale 0.85-1.0) minus the targets.

Both draw from torch's global RNG (seeded per batch by the trainer).  Collators return
``{"inputs", "context_idx" [B, K], "target_idx" [B, M]}`` with K, M equal across the batch.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch.utils.data import default_collate


def _composition(total: int, parts: int) -> List[int]:
    """Uniformly random split of ``total`` into ``parts`` non-negative integers."""
    if parts == 1:
        return [total]
    cuts = torch.randint(0, total + 1, (parts - 1,)).sort().values.tolist()
    edges = [0] + cuts + [total]
    return [edges[i + 1] - edges[i] for i in range(parts)]


class BlockMasker1D:
    """Context/target split of ``n`` 1-D patches into alternating context gaps and target blocks."""

    def __init__(self, context_ratio: Tuple[float, float] = (0.15, 0.25), min_block: int = 10,
                 max_blocks: int = 4) -> None:
        lo, hi = context_ratio
        if not 0 < lo <= hi < 1:
            raise ValueError(f"context_ratio must satisfy 0 < lo <= hi < 1, got {context_ratio}")
        if min_block < 1 or max_blocks < 1:
            raise ValueError("min_block and max_blocks must be >= 1")
        self.context_ratio, self.min_block, self.max_blocks = (lo, hi), min_block, max_blocks

    def n_context(self, n: int) -> int:
        """Draw the context size for a batch of ``n``-patch sequences."""
        r = self.context_ratio[0] + (self.context_ratio[1] - self.context_ratio[0]) * float(torch.rand(()))
        k = max(1, int(round(r * n)))
        if n - k < self.min_block:
            raise ValueError(f"{n} patches leave {n - k} target patches < min_block {self.min_block}; "
                             "use longer crops or a smaller min_block")
        return k

    def __call__(self, n: int, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """One mask: (context indices ``[k]``, target indices ``[n - k]``), both sorted."""
        m_tgt = n - k
        m_max = max(1, min(self.max_blocks, m_tgt // self.min_block, k + 1))
        blocks = int(torch.randint(1, m_max + 1, ()))
        lengths = [self.min_block + e for e in _composition(m_tgt - blocks * self.min_block, blocks)]
        # gaps before/between/after the blocks; inner gaps >= 1 keep blocks separate
        gaps = _composition(k - (blocks - 1), blocks + 1)
        for i in range(1, blocks):
            gaps[i] += 1
        is_target = torch.zeros(n, dtype=torch.bool)
        pos = 0
        for i in range(blocks):
            pos += gaps[i]
            is_target[pos:pos + lengths[i]] = True
            pos += lengths[i]
        return (~is_target).nonzero().squeeze(1), is_target.nonzero().squeeze(1)


class BlockMasker2D:
    """I-JEPA multi-block masks on an ``h x w`` patch grid (flattened row-major indices)."""

    def __init__(self, n_targets: int = 4, target_scale: Tuple[float, float] = (0.15, 0.2),
                 target_aspect: Tuple[float, float] = (0.75, 1.5), context_scale: Tuple[float, float] = (0.85, 1.0),
                 min_keep: int = 4) -> None:
        self.n_targets, self.target_scale, self.target_aspect = n_targets, target_scale, target_aspect
        self.context_scale, self.min_keep = context_scale, min_keep

    @staticmethod
    def _block(h: int, w: int, scale: Tuple[float, float], aspect: Tuple[float, float]) -> torch.Tensor:
        s = scale[0] + (scale[1] - scale[0]) * float(torch.rand(()))
        la, lb = math.log(aspect[0]), math.log(aspect[1])
        a = math.exp(la + (lb - la) * float(torch.rand(())))
        bh = max(1, min(h, int(round(math.sqrt(s * h * w * a)))))
        bw = max(1, min(w, int(round(math.sqrt(s * h * w / a)))))
        top = int(torch.randint(0, h - bh + 1, ()))
        left = int(torch.randint(0, w - bw + 1, ()))
        m = torch.zeros(h, w, dtype=torch.bool)
        m[top:top + bh, left:left + bw] = True
        return m

    def __call__(self, h: int, w: int) -> Tuple[torch.Tensor, torch.Tensor]:
        for _ in range(20):
            targets = torch.zeros(h, w, dtype=torch.bool)
            for _ in range(self.n_targets):
                targets |= self._block(h, w, self.target_scale, self.target_aspect)
            context = self._block(h, w, self.context_scale, (1.0, 1.0)) & ~targets
            if int(context.sum()) >= self.min_keep:
                return context.flatten().nonzero().squeeze(1), targets.flatten().nonzero().squeeze(1)
        raise RuntimeError(f"BlockMasker2D: could not keep {self.min_keep} context patches on a {h}x{w} grid")


def _truncate(idx: Sequence[torch.Tensor]) -> torch.Tensor:
    """Random subsets of equal size (the batch minimum), re-sorted, stacked -> ``[B, min_len]``."""
    m = min(len(i) for i in idx)
    return torch.stack([i[torch.randperm(len(i))[:m]].sort().values for i in idx])


class JEPACollator1D:
    """Batch ``[C, T]`` signals (or ``(signal, ...)`` tuples) and add 1-D block masks."""

    def __init__(self, masker: BlockMasker1D, patch_size: int) -> None:
        self.masker, self.patch_size = masker, patch_size

    def __call__(self, batch: Sequence[Any]) -> Dict[str, torch.Tensor]:
        x = default_collate([b[0] if isinstance(b, (tuple, list)) else b for b in batch])
        n = x.shape[-1] // self.patch_size
        k = self.masker.n_context(n)
        ctx, tgt = zip(*(self.masker(n, k) for _ in range(x.shape[0])))
        return {"inputs": x, "context_idx": torch.stack(ctx), "target_idx": torch.stack(tgt)}


class JEPACollator2D:
    """Batch ``[C, H, W]`` images (or tuples) and add I-JEPA multi-block masks on the patch grid."""

    def __init__(self, masker: BlockMasker2D, patch_size: int) -> None:
        self.masker, self.patch_size = masker, patch_size

    def __call__(self, batch: Sequence[Any]) -> Dict[str, torch.Tensor]:
        x = default_collate([b[0] if isinstance(b, (tuple, list)) else b for b in batch])
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        ctx, tgt = zip(*(self.masker(h, w) for _ in range(x.shape[0])))
        return {"inputs": x, "context_idx": _truncate(ctx), "target_idx": _truncate(tgt)}
