"""Trainer overhead: sslab's ``Trainer`` vs a plain hand-written PyTorch loop on the same model and data.

Both loops run the same transformer LM, data, batch, fused AdamW, gradient clipping (1.0), autocast
(bf16 on CUDA, none on CPU) and read the loss every ``--log-every`` steps. Per round and loop:

- ``step_ms``: steady-state wall time per step (the first ``W = --warmup`` steps and the last are
  dropped).
- ``outside_ms``: the part of each steady-state step spent outside forward, backward and the optimizer
  (clipping, ``optimizer.step``, ``zero_grad``), timed with hooks on the same model in both loops:
  forward pre/post hooks, ``Tensor.backward`` wrapped (backward starts), post-accumulate-grad hooks
  (backward ends), optimizer step pre/post hooks and a wrapped ``zero_grad``. For the Trainer this is
  its own per-step cost: fetching and seeding the batch, moving it, schedules, the non-finite flag,
  logging, ``fit``'s bookkeeping. On CUDA it also holds the time the CPU waits for the GPU, so there
  the ratio is the figure that counts.
- ``fit_s``: the whole run: setup, all steps, and for the Trainer its end-of-run checkpoint,
  metrics.jsonl and loss plot.

Modes. ``interleaved`` (default on CPU): both loops in one process, one step each in turn (the plain
step runs in a Trainer step hook and its time is taken out of ours), so a shared machine's changing
load hits both alike and the ratio resolves ~1%. ``separate`` (default on CUDA, a dedicated device):
whole runs, the order alternating between rounds. Reported: medians over rounds with min-max spread of
the steady-state ratio ``plain step_ms / ours step_ms`` (ours throughput relative to plain), of the
whole-fit ratio and of the Trainer's own cost as a share of its step. A data-fetch micro-benchmark
compares per-sample seeding (before), batched seeding (now; same stream) and one seed per batch
(a different stream; not used).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/trainer_overhead.py                       # CPU, 5 rounds x 150 steps
    python benchmarks/trainer_overhead.py --device cuda --rounds 3 --steps 200    # ~10 ms steps on an H200

The last line is ``RESULT {json}`` (machine-readable).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from sslab.core.config import load_experiment
from sslab.core.data import (ResumableBatchSampler, SeededBatches, SeededCollate, SeededDataset,
                             passthrough, preserved_rng, seed_all)
from sslab.core.trainer import Trainer, optimizer_kernel


@dataclass
class Size:
    vocab: int
    dim: int
    depth: int
    heads: int
    seq: int
    batch: int


SIZES = {  # cpu: ~190 ms per step on one core; cuda: ~10 ms per step on an H200 (bf16)
    "cpu": Size(vocab=512, dim=128, depth=2, heads=4, seq=64, batch=32),
    "cuda": Size(vocab=8192, dim=512, depth=8, heads=8, seq=256, batch=64),
}


class Tokens(Dataset):
    def __init__(self, n: int, seq: int, vocab: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, vocab, (n, seq + 1), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


class TinyLM(nn.Module):
    """Pre-norm transformer predicting the next token (a stand-in objective with realistic compute)."""

    def __init__(self, s: Size) -> None:
        super().__init__()
        self.emb = nn.Embedding(s.vocab, s.dim)
        layer = nn.TransformerEncoderLayer(s.dim, s.heads, 4 * s.dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, s.depth, enable_nested_tensor=False)
        self.head = nn.Linear(s.dim, s.vocab)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        h = self.encoder(self.emb(x[:, :-1]))
        loss = nn.functional.cross_entropy(self.head(h).flatten(0, 1).float(), x[:, 1:].flatten())
        return {"loss": loss}


_LAST_BACKWARD_CALL = [0.0]


def _timed_backward(orig: Callable[..., Any]) -> Callable[..., Any]:
    def backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        _LAST_BACKWARD_CALL[0] = time.perf_counter()
        return orig(self, *args, **kwargs)
    return backward


class PhaseClock:
    """Timestamps of each step's phases, from hooks (identical in both loops).

    ``t0`` forward starts, ``t1`` forward ends, ``t2`` ``loss.backward()`` is called (``Tensor.backward``
    is wrapped by ``main``; read by a hook on the loss), ``t3`` the last gradient is accumulated, ``t5``
    ``optimizer.step`` returns (``t3 -> t5`` is clipping + the update), ``zero`` the time in
    ``optimizer.zero_grad`` (part of the optimizer's work).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, sync_at: List[int],
                 device: torch.device) -> None:
        self.steps: List[Dict[str, float]] = []
        self.sync_at, self.device = set(sync_at), device
        self._last_grad = 0.0
        model.register_forward_pre_hook(self._fwd_start)
        model.register_forward_hook(self._fwd_end)
        for p in model.parameters():
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(self._grad)
        optimizer.register_step_pre_hook(self._opt_start)
        optimizer.register_step_post_hook(self._opt_end)
        zero_grad = optimizer.zero_grad

        def timed_zero_grad(*args: Any, **kwargs: Any) -> None:
            t = time.perf_counter()
            zero_grad(*args, **kwargs)
            if self.steps:
                self.steps[-1]["zero"] = self.steps[-1].get("zero", 0.0) + time.perf_counter() - t

        optimizer.zero_grad = timed_zero_grad  # type: ignore[method-assign]

    def _fwd_start(self, module: nn.Module, args: Any) -> None:
        if len(self.steps) in self.sync_at and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.steps.append({"t0": time.perf_counter()})

    def _fwd_end(self, module: nn.Module, args: Any, out: Dict[str, torch.Tensor]) -> None:
        self.steps[-1]["t1"] = time.perf_counter()
        out["loss"].register_hook(self._bwd_start)

    def _bwd_start(self, grad: torch.Tensor) -> None:
        self.steps[-1]["t2"] = _LAST_BACKWARD_CALL[0] or time.perf_counter()

    def _grad(self, p: torch.Tensor) -> None:
        self._last_grad = time.perf_counter()

    def _opt_start(self, *a: Any) -> None:
        self.steps[-1]["t3"] = self._last_grad

    def _opt_end(self, *a: Any) -> None:
        self.steps[-1]["t5"] = time.perf_counter()

    def summary(self, warmup: int, minus: Optional[List[float]] = None,
                durations: Optional[List[float]] = None) -> Dict[str, float]:
        """``step_ms`` and ``outside_ms`` over steps ``warmup .. n-2`` (step n-1 only marks the end).

        A step lasts from its forward's start to the next one's, less ``minus[k]`` seconds (the other
        loop's step run in between, interleaved mode), or ``durations[k]`` when given.
        """
        s = self.steps
        first, last = warmup, len(s) - 1
        if last - first < 2:
            raise SystemExit(f"need more than warmup + 2 = {warmup + 2} steps, got {len(s)}")
        if durations is not None:
            step = statistics.fmean(durations[first:last])
        else:
            step = (s[last]["t0"] - s[first]["t0"] - sum((minus or [0.0] * last)[first:last])) / (last - first)
        inside = statistics.fmean((r["t1"] - r["t0"]) + (r["t3"] - r["t2"]) + (r["t5"] - r["t3"])
                                  + r.get("zero", 0.0) for r in s[first:last])
        return {"step_ms": 1e3 * step, "outside_ms": 1e3 * (step - inside)}


def _amp(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _ours_cfg(args: argparse.Namespace, size: Size, device: torch.device, tmp: str) -> Any:
    return load_experiment(None, [f"output_dir={tmp}", "name=bench", f"train.steps={args.steps}",
                                  f"train.batch_size={size.batch}", f"train.device={device}",
                                  f"train.log_every={args.log_every}", f"train.num_workers={args.num_workers}",
                                  "train.progress=false", "optim.schedule=constant", "optim.lr=1e-3",
                                  "optim.warmup_steps=0", "optim.clip_grad=1.0"])


def run_ours(args: argparse.Namespace, size: Size, data: Dataset, device: torch.device) -> Dict[str, float]:
    torch.manual_seed(0)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(TinyLM(size), data, None, _ours_cfg(args, size, device, tmp), Path(tmp) / "bench")
        clock = PhaseClock(trainer.objective, trainer.optimizer, [args.warmup, args.steps - 1], device)
        trainer.fit()
        fit_s = time.perf_counter() - t
    return {**clock.summary(args.warmup), "fit_s": fit_s}


class PlainLoop:
    """The hand-written loop, one step at a time: fetch, move, forward, backward, clip, step, zero_grad."""

    def __init__(self, args: argparse.Namespace, size: Size, data: Dataset, device: torch.device,
                 sync_at: List[int]) -> None:
        torch.manual_seed(0)
        self.args, self.device, self.done = args, device, 0
        self.model = TinyLM(size).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, **optimizer_kernel(device, sharded=False))
        self.clock = PhaseClock(self.model, self.opt, sync_at, device)
        self.loader = DataLoader(data, batch_size=size.batch, shuffle=True, drop_last=True,
                                 num_workers=args.num_workers, pin_memory=device.type == "cuda")
        self.it = iter(self.loader)

    def step(self) -> None:
        try:
            x = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            x = next(self.it)
        x = x.to(self.device, non_blocking=True)
        with _amp(self.device):
            loss = self.model(x)["loss"]
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.done += 1
        if self.done % self.args.log_every == 0 or self.done == self.args.steps:
            loss.item()


def run_plain(args: argparse.Namespace, size: Size, data: Dataset, device: torch.device) -> Dict[str, float]:
    t = time.perf_counter()
    plain = PlainLoop(args, size, data, device, [args.warmup, args.steps - 1])
    for _ in range(args.steps):
        plain.step()
    return {**plain.clock.summary(args.warmup), "fit_s": time.perf_counter() - t}


def run_interleaved(args: argparse.Namespace, size: Size, data: Dataset,
                    device: torch.device) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Both loops in one process, one step each in turn: the plain loop's step runs inside a Trainer step
    hook and its duration is taken out of ours. Load changes on a shared machine then hit both alike.

    Whole-fit times: ours = Trainer construction to the end of ``fit`` (end checkpoint, metrics, plot)
    less the plain steps; plain = its setup plus its steps.
    """
    t = time.perf_counter()
    plain = PlainLoop(args, size, data, device, [])
    plain_setup = time.perf_counter() - t
    durations: List[float] = []

    def hook(step: int, total: int, trainer: Trainer) -> None:
        t0 = time.perf_counter()
        plain.step()
        durations.append(time.perf_counter() - t0)

    torch.manual_seed(0)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(TinyLM(size), data, None, _ours_cfg(args, size, device, tmp), Path(tmp) / "bench",
                          hooks=[hook])
        clock = PhaseClock(trainer.objective, trainer.optimizer, [], device)
        trainer.fit()
        ours_fit = time.perf_counter() - t - sum(durations)
    ours = {**clock.summary(args.warmup, minus=durations), "fit_s": ours_fit}
    return ours, {**plain.clock.summary(args.warmup, durations=durations), "fit_s": plain_setup + sum(durations)}


def fetch_ms(make: Callable[[], Any], batches: int) -> float:
    """Milliseconds per batch of iterating ``make()`` (a fresh iterator) for ``batches`` batches."""
    it = make()
    next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return 1e3 * (time.perf_counter() - t) / batches


class OneSeedPerBatch(SeededBatches):
    """The alternative not taken: seed once per batch and let the samples share that stream (cheaper,
    but a sample's augmentation then depends on its batch neighbours and on the number of ranks)."""

    def __getitems__(self, keys: Any) -> Any:
        with preserved_rng():
            seed_all(keys[0][2])
            return self.collate_fn([self.base[i] for i, _, _ in keys])


def data_fetch_benchmark(data: Dataset, batch: int, batches: int) -> Dict[str, float]:
    """Per-batch cost in the main process of: a plain DataLoader, per-sample seeding (what the Trainer
    did before), batched seeding (what it does now: the same random stream) and one seed per batch
    (a different stream, not used)."""
    sampler = ResumableBatchSampler(len(data), batch, seed=0)  # type: ignore[arg-type]
    out = {}
    for _ in range(2):  # second pass is reported (first warms caches)
        out = {
            "plain_loader": fetch_ms(lambda: iter(DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)),
                                     batches),
            "per_sample_seeding": fetch_ms(lambda: iter(DataLoader(SeededDataset(data), batch_sampler=sampler,
                                                                   collate_fn=SeededCollate(default_collate))),
                                           batches),
            "batched_seeding": fetch_ms(lambda: iter(DataLoader(SeededBatches(data), batch_sampler=sampler,
                                                                collate_fn=passthrough)), batches),
            "one_seed_per_batch": fetch_ms(lambda: iter(DataLoader(OneSeedPerBatch(data), batch_sampler=sampler,
                                                                   collate_fn=passthrough)), batches),
        }
    return out


def _spread(values: List[float], fmt: str = "{:.3f}") -> str:
    return (f"{fmt.format(statistics.median(values))} (min {fmt.format(min(values))}, "
            f"max {fmt.format(max(values))}, n={len(values)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=10, help="steps dropped from the steady state")
    ap.add_argument("--log-every", type=int, default=10, help="both loops read the loss every N steps")
    ap.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (both loops)")
    ap.add_argument("--batch", type=int, default=None, help="override the size's batch")
    ap.add_argument("--mode", choices=["auto", "interleaved", "separate"], default="auto",
                    help="interleaved: one step of each in turn in one process (default on CPU, robust to a "
                         "shared machine); separate: whole runs in alternating order (default on CUDA, "
                         "where per-step attribution would need a sync each step)")
    args = ap.parse_args()
    torch.Tensor.backward = _timed_backward(torch.Tensor.backward)  # type: ignore[method-assign]
    args.warmup = min(args.warmup, args.steps // 2)  # short smoke runs keep a steady-state window
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: CUDA is not available on this machine")
        device = torch.device("cuda", 0)
        torch.backends.cuda.matmul.allow_tf32 = True
    size = SIZES[device.type]
    if args.batch:
        size.batch = args.batch
    data = Tokens(max(4096, size.batch * 64), size.seq, size.vocab)
    fetch = data_fetch_benchmark(data, size.batch, 100)
    print("data fetch, ms per batch (main process): "
          + ", ".join(f"{k} {v:.3f}" for k, v in fetch.items()), flush=True)
    mode = args.mode if args.mode != "auto" else ("separate" if device.type == "cuda" else "interleaved")
    rows: Dict[str, List[Dict[str, float]]] = {"ours": [], "plain": []}
    for r in range(args.rounds):
        if mode == "interleaved":
            order = ["ours/plain step by step"]
            o, p = run_interleaved(args, size, data, device)
            rows["ours"].append(o)
            rows["plain"].append(p)
        else:
            order = ["ours", "plain"] if r % 2 == 0 else ["plain", "ours"]
            for name in order:
                rows[name].append((run_ours if name == "ours" else run_plain)(args, size, data, device))
        o, p = rows["ours"][-1], rows["plain"][-1]
        print(f"round {r + 1}/{args.rounds} ({' then '.join(order)}): step ms ours {o['step_ms']:.2f} "
              f"plain {p['step_ms']:.2f} | outside ms ours {o['outside_ms']:.3f} plain {p['outside_ms']:.3f} | "
              f"fit s ours {o['fit_s']:.2f} plain {p['fit_s']:.2f}", flush=True)
    ours, plain = rows["ours"], rows["plain"]
    steady = [p["step_ms"] / o["step_ms"] for o, p in zip(ours, plain)]
    whole = [p["fit_s"] / o["fit_s"] for o, p in zip(ours, plain)]
    share = [100 * o["outside_ms"] / o["step_ms"] for o in ours]
    extra = [o["outside_ms"] - p["outside_ms"] for o, p in zip(ours, plain)]
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    print(f"step ms       : ours {med(ours, 'step_ms'):.2f}, plain {med(plain, 'step_ms'):.2f} (medians)")
    print(f"trainer's own cost (ours outside fwd/bwd/opt): {med(ours, 'outside_ms'):.3f} ms/step; "
          f"plain loop outside: {med(plain, 'outside_ms'):.3f} ms/step")
    print(f"own cost share of a step, %   : {_spread(share, '{:.2f}')}  (target < 2)")
    print(f"ours - plain outside, ms/step : {_spread(extra)}")
    print(f"steady-state ratio ours/plain : {_spread(steady)}  (target >= 0.97)")
    print(f"whole-fit ratio ours/plain    : {_spread(whole)}  (ours includes its end checkpoint, "
          "metrics.jsonl and loss plot)")
    result = {
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "size": vars(size), "mode": mode, "steps": args.steps, "rounds": args.rounds, "warmup": args.warmup,
        "log_every": args.log_every, "num_workers": args.num_workers,
        "ours_step_ms": med(ours, "step_ms"), "plain_step_ms": med(plain, "step_ms"),
        "ours_outside_ms": med(ours, "outside_ms"), "plain_outside_ms": med(plain, "outside_ms"),
        "own_cost_pct_median": statistics.median(share), "own_cost_pct_max": max(share),
        "steady_ratio_median": statistics.median(steady), "steady_ratio_min": min(steady),
        "steady_ratio_max": max(steady), "fit_ratio_median": statistics.median(whole),
        "fit_ratio_min": min(whole), "fit_ratio_max": max(whole), "data_fetch_ms": fetch,
        "rounds_raw": rows,
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
