"""SwitchLoRA (Zhou et al. 2024, "SwitchLoRA: Switched Low-Rank Adaptation Can Learn Full-Rank
Information", Sec. 3): LoRA ``h = W x + s B A x`` whose vectors are periodically swapped with vectors
from a candidate pool, the frozen weight absorbing the change so the layer output is unchanged:

    switch column i of B (b -> b'):  W <- W + s (b - b') a_i^T,   B[:, i] <- b'
    switch row i of A   (a -> a'):   W <- W + s b_i (a - a')^T,   A[i, :] <- a'

Over many switches the sum of low-rank updates spans a full-rank change of W. The swapped-out
vector goes back to the pool; switching frequency decays as ``switch_every * (1 + step / decay_steps)``.

Optimizer state (the paper's Sec. 3.2 and the authors' code, ``zero_lora_states`` /
``correct_switched_lora`` with ``adam_warm_step = 5``): pair ``i`` is (column ``i`` of B, row ``i`` of
A). When either vector of pair ``i`` is switched, the optimizer moments of *both* vectors of the pair
are zeroed — the switched vector's because they belong to the vector it replaced, its counterpart's
because its gradient ``dL/dA[i] = s (B[:, i]^T dL/dh) x^T`` (resp. ``dL/dB[:, i] = s dL/dh (A[i] x)``) is
computed through the switched vector — and the counterpart is frozen (zero gradient) for
``freeze_steps`` optimizer steps while the new vector's moments build up. In one switch the
switched B columns and A rows are distinct pairs, and frozen pairs are not switched.

The layer holds the optimizer only weakly: the core Trainer calls ``bind_optimizer(optimizer)`` on every
submodule that has it once AdamW exists (outside the Trainer, call it yourself); the switch, which runs in
``on_step_end`` after the step, zeroes the moments through it. An unbound layer resets nothing. Every per-element state tensor of the factor is zeroed
(AdamW ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``, SGD ``momentum_buffer``); torch keeps one
``step`` count per tensor, so — unlike the authors' element-wise-step AdamW — the reset entries are
not bias-corrected as fresh ones (their first updates are up to ~3-6x a warmed-up Adam step).
"""
from __future__ import annotations

import math
import weakref
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sslab.encoders.adapters.common import lora_init_

def zero_state_slices(optimizer: torch.optim.Optimizer, param: torch.Tensor, dim: int,
                      index: torch.Tensor) -> int:
    """Zero ``index`` along ``dim`` of every per-element state tensor of ``param`` in ``optimizer``
    (AdamW moments, SGD momentum ...); returns the number of entries zeroed."""
    state = optimizer.state.get(param)  # .get: the state defaultdict must not grow an entry
    if not state or len(index) == 0:
        return 0
    n = 0
    for v in state.values():
        if isinstance(v, torch.Tensor) and v.shape == param.shape:
            v.index_fill_(dim, index.to(v.device), 0)
            n += index.numel() * (v.numel() // v.shape[dim])
    return n


class SwitchLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 8.0, num_candidates: int = 0,
                 freeze_steps: int = 5, reset_optimizer: bool = True) -> None:
        super().__init__()
        if freeze_steps < 0:
            raise ValueError(f"freeze_steps must be >= 0, got {freeze_steps}")
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.r, self.scaling = r, float(alpha) / r
        self.freeze_steps, self.reset_optimizer = int(freeze_steps), bool(reset_optimizer)
        n = num_candidates or r  # pool size per side (paper: about the rank)
        out_f, in_f = base.out_features, base.in_features
        self.lora_A = nn.Parameter(lora_init_(torch.empty(r, in_f)))
        # B starts non-zero (vectors must carry information to be switched); W absorbs s*B@A so the
        # initial output equals the base layer's
        std_b = 1.0 / math.sqrt(out_f)
        self.lora_B = nn.Parameter(torch.randn(out_f, r) * std_b)
        self.register_buffer("cand_A", lora_init_(torch.empty(n, in_f)))
        self.register_buffer("cand_B", torch.randn(n, out_f) * std_b)
        # optimizer steps left during which row i of A / column i of B gets no gradient
        self.register_buffer("frozen_A", torch.zeros(r, dtype=torch.long))
        self.register_buffer("frozen_B", torch.zeros(r, dtype=torch.long))
        self._optimizer: Optional["weakref.ref[torch.optim.Optimizer]"] = None
        self.last_reset = 0  # optimizer-state entries zeroed by the last switch
        with torch.no_grad():
            self.base.weight.sub_(self.scaling * self.lora_B @ self.lora_A)

    def bind_optimizer(self, optimizer: Optional[torch.optim.Optimizer]) -> None:
        """Use ``optimizer``'s state for moment resets (the core Trainer calls this after building AdamW)."""
        self._optimizer = weakref.ref(optimizer) if optimizer is not None else None

    @property
    def optimizer(self) -> Optional[torch.optim.Optimizer]:
        return self._optimizer() if self._optimizer is not None else None

    def _factors(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """A and B with the frozen rows/columns cut from the graph (zero gradient, same values)."""
        if self.freeze_steps == 0:
            return self.lora_A, self.lora_B
        A = torch.where((self.frozen_A > 0)[:, None], self.lora_A.detach(), self.lora_A)
        B = torch.where((self.frozen_B > 0)[None, :], self.lora_B.detach(), self.lora_B)
        return A, B

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        A, B = self._factors()
        return self.base(x) + F.linear(F.linear(x, A), B) * self.scaling

    @torch.no_grad()
    def tick(self) -> None:
        """One optimizer step has passed: count down the frozen vectors."""
        self.frozen_A.sub_(1).clamp_(min=0)
        self.frozen_B.sub_(1).clamp_(min=0)

    def _choose(self, num: int, g: Optional[torch.Generator]) -> Tuple[List[int], List[int]]:
        """Distinct pairs for the B columns and the A rows to switch, among pairs not frozen."""
        free = ((self.frozen_A == 0) & (self.frozen_B == 0)).nonzero().squeeze(1).cpu()
        free = free[torch.randperm(len(free), generator=g)]
        k = min(num, len(free) // 2, len(self.cand_A), len(self.cand_B))
        return free[:k].tolist(), free[k: 2 * k].tolist()

    @torch.no_grad()
    def switch(self, num: int = 1, generator: Optional[torch.Generator] = None) -> int:
        """Swap ``num`` random columns of B and ``num`` random rows of A (distinct pairs) with pool
        vectors; reset the moments of the touched pairs and freeze the counterparts. Returns the number
        of vectors switched."""
        g = generator
        cols, rows = self._choose(num, g)
        W = self.base.weight
        for i, j in zip(cols, torch.randperm(len(self.cand_B), generator=g)[: len(cols)].tolist()):
            old, new = self.lora_B[:, i].clone(), self.cand_B[j].clone()
            W.add_(self.scaling * torch.outer(old - new, self.lora_A[i]))
            self.lora_B[:, i] = new
            self.cand_B[j] = old
        for i, j in zip(rows, torch.randperm(len(self.cand_A), generator=g)[: len(rows)].tolist()):
            old, new = self.lora_A[i].clone(), self.cand_A[j].clone()
            W.add_(self.scaling * torch.outer(self.lora_B[:, i], old - new))
            self.lora_A[i] = new
            self.cand_A[j] = old
        if self.freeze_steps:
            self.frozen_A[cols] = self.freeze_steps  # counterparts of the switched B columns
            self.frozen_B[rows] = self.freeze_steps  # counterparts of the switched A rows
        self.last_reset = 0
        opt = self.optimizer
        if self.reset_optimizer and opt is not None and (cols or rows):
            pairs = torch.tensor(sorted(set(cols) | set(rows)), dtype=torch.long)
            self.last_reset = (zero_state_slices(opt, self.lora_A, 0, pairs)
                               + zero_state_slices(opt, self.lora_B, 1, pairs))
        return len(cols) + len(rows)


def switchlora_layers(model: nn.Module) -> List[SwitchLoRALinear]:
    return [m for m in model.modules() if isinstance(m, SwitchLoRALinear)]


def switch_all(model: nn.Module, num: int = 1, seed: Optional[int] = None) -> int:
    """Switch ``num`` vectors per side in every layer. With ``seed`` (the step), the choice comes from
    a generator seeded by it, so every DDP rank makes the same switch (the frozen weights are not
    synchronised by DDP)."""
    g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    return sum(m.switch(num, g) for m in switchlora_layers(model))


def tick_all(model: nn.Module) -> None:
    for m in switchlora_layers(model):
        m.tick()


def switch_due(step: int, every: int, decay_steps: int = 0) -> bool:
    """Whether to switch after ``step`` completed steps (interval grows with ``decay_steps``)."""
    if every <= 0:
        return False
    interval = every if decay_steps <= 0 else max(1, int(round(every * (1 + step / decay_steps))))
    return step % interval == 0
