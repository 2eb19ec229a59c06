"""One training loop for every objective.

Device selection (cuda > cpu), bf16 autocast on CUDA, optional ``torch.compile``, gradient
accumulation, clipping, AdamW with parameter groups (no weight decay on norms, biases and other
1-D parameters; per-module LR factors), warmup + cosine LR, cosine weight-decay schedule, step hooks,
DDP (default) or FSDP2 under ``torchrun``, atomic checkpoints with exact resume, metrics.jsonl,
a tqdm progress bar and a loss-curve PNG.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sslab.core import distributed as dist_utils
from sslab.core.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from sslab.core.config import ExperimentConfig
from sslab.core.data import ResumableBatchSampler, SeededCollate, SeededDataset, move_to_device
from sslab.core.metrics import MetricsLogger, plot_loss_curve
from sslab.core.schedules import cosine, warmup_cosine

StepHook = Callable[[int, int, "Trainer"], Optional[Dict[str, float]]]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the message names the step and the logged values."""


def select_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA (this process's LOCAL_RANK) when available, otherwise CPU."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={spec!r} but CUDA is not available on this machine")
    return device


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """bf16 autocast on CUDA by default; fp32 (no autocast) on CPU unless bf16 is asked for."""
    choices = {"auto", "bf16", "fp32"}
    if precision not in choices:
        raise ValueError(f"train.precision must be one of {sorted(choices)}, got {precision!r}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def param_groups(model: nn.Module, weight_decay: float, lr_scales: Dict[str, float]) -> List[Dict[str, Any]]:
    """AdamW groups: decay only on >=2-D weights (not norms/biases/embeddings tokens); LR factors by name prefix."""
    no_decay_names = set()
    if hasattr(model, "no_weight_decay"):
        no_decay_names = set(model.no_weight_decay())  # type: ignore[operator]
    groups: Dict[Tuple[float, bool], Dict[str, Any]] = {}
    prefixes = sorted(lr_scales, key=len, reverse=True)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and name not in no_decay_names and not name.endswith(".bias")
        scale = next((lr_scales[k] for k in prefixes if name.startswith(k)), 1.0)
        g = groups.setdefault((scale, decay), {"params": [], "names": [], "lr_scale": scale,
                                               "wd_scale": 1.0 if decay else 0.0,
                                               "weight_decay": weight_decay if decay else 0.0})
        g["params"].append(p)
        g["names"].append(name)
    if not groups:
        raise ValueError("the objective has no trainable parameters")
    return list(groups.values())


class Trainer:
    """Trains ``objective`` (an ``nn.Module`` whose forward returns ``{"loss": ...}``) on ``dataset``."""

    def __init__(self, objective: nn.Module, dataset: Dataset, collate_fn: Optional[Callable[[Sequence[Any]], Any]],
                 cfg: ExperimentConfig, run_dir: Optional[Path] = None, hooks: Sequence[StepHook] = ()) -> None:
        self.cfg = cfg
        self.tcfg, self.ocfg = cfg.train, cfg.optim
        if self.tcfg.steps <= 0 or self.tcfg.batch_size <= 0 or self.tcfg.grad_accum <= 0:
            raise ValueError("train.steps, train.batch_size and train.grad_accum must be positive")
        self.run_dir = Path(run_dir) if run_dir is not None else cfg.run_dir
        self.device = select_device(self.tcfg.device)
        self.distributed = dist_utils.init_from_env(self.device)
        self.rank, self.world = dist_utils.rank(), dist_utils.world_size()
        self.is_main = self.rank == 0
        self.objective = objective.to(self.device)
        self.hooks: List[StepHook] = list(hooks)
        self.amp_dtype = autocast_dtype(self.tcfg.precision, self.device)
        self.dataset, self.collate_fn = dataset, collate_fn
        self.sampler = ResumableBatchSampler(len(dataset), self.tcfg.batch_size, seed=cfg.seed,  # type: ignore[arg-type]
                                             shuffle=self.tcfg.shuffle,
                                             rank=self.rank, world_size=self.world,
                                             lengths=getattr(dataset, "lengths", None) if self.tcfg.length_bucketing else None,
                                             bucket_pool=self.tcfg.length_bucketing)
        self.model = self._wrap(self.objective)
        self.forward_module: Callable[..., Dict[str, Any]] = (
            torch.compile(self.model) if self.tcfg.compile else self.model)  # type: ignore[assignment]
        self.optimizer = torch.optim.AdamW(
            param_groups(self.objective, self.ocfg.weight_decay, self.ocfg.lr_scales),
            lr=self.ocfg.lr, betas=tuple(self.ocfg.betas), eps=self.ocfg.eps)  # type: ignore[arg-type]
        for module in self.objective.modules():  # e.g. SwitchLoRA layers reset their vectors' Adam moments
            if callable(getattr(module, "bind_optimizer", None)):
                module.bind_optimizer(self.optimizer)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.ckpt_dir = self.run_dir / "checkpoints"

    # ------------------------------------------------------------------ setup
    def _wrap(self, objective: nn.Module) -> nn.Module:
        if not self.distributed:
            return objective
        if self.tcfg.distributed == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # Parameters with requires_grad=False (EMA teachers, frozen towers) are not reduced by DDP.
            return DDP(objective, device_ids=ids, find_unused_parameters=getattr(objective, "find_unused_parameters", False))
        if self.tcfg.distributed == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(self.device.type, (self.world,))
            for child in objective.children():
                if any(p.requires_grad for p in child.parameters()):
                    fully_shard(child, mesh=mesh)
            fully_shard(objective, mesh=mesh)
            return objective
        raise ValueError(f"train.distributed must be 'ddp' or 'fsdp', got {self.tcfg.distributed!r}")

    @property
    def total_steps(self) -> int:
        return self.tcfg.steps

    @property
    def global_batch(self) -> int:
        return self.tcfg.batch_size * self.tcfg.grad_accum * self.world

    # ------------------------------------------------------------------ data
    def _batches(self) -> Iterator[Any]:
        """Endless batches, continuing from (epoch, batch_in_epoch)."""
        seeded = SeededDataset(self.dataset)
        collate = SeededCollate(self.collate_fn)
        while True:
            self.sampler.set_position(self.epoch, self.batch_in_epoch)
            loader = DataLoader(seeded, batch_sampler=self.sampler, collate_fn=collate,
                                num_workers=self.tcfg.num_workers, pin_memory=self.device.type == "cuda",
                                persistent_workers=False,
                                # own generator: creating the iterator must not consume the global RNG
                                generator=torch.Generator().manual_seed(self.cfg.seed + self.epoch))
            for batch in loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    # ------------------------------------------------------------------ schedules
    def _apply_schedules(self) -> Tuple[float, float]:
        o = self.ocfg
        if o.schedule == "cosine":
            lr = warmup_cosine(self.step, self.total_steps, o.warmup_steps, o.lr, o.min_lr)
        elif o.schedule == "constant":
            lr = o.lr * min(1.0, (self.step + 1) / o.warmup_steps) if o.warmup_steps else o.lr
        else:
            raise ValueError(f"optim.schedule must be 'cosine' or 'constant', got {o.schedule!r}")
        wd_end = o.weight_decay if o.weight_decay_end is None else o.weight_decay_end
        wd = cosine(self.step, self.total_steps, o.weight_decay, wd_end)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g["lr_scale"]
            g["weight_decay"] = wd * g["wd_scale"]
        return lr, wd

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        objective_state, optim_state = self._model_and_optim_state()
        state = {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "objective": objective_state, "optimizer": optim_state, "rng": rng_state(),
            "world_size": self.world,
        }
        if hasattr(self.objective, "extra_state"):
            state["objective_extra"] = self.objective.extra_state()  # type: ignore[operator]
        return state

    def _model_and_optim_state(self) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        if self.distributed and self.tcfg.distributed == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_state_dict(self.objective, self.optimizer, options=opts)  # type: ignore[return-value]
        return self.objective.state_dict(), self.optimizer.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state.get("world_size", 1) != self.world:
            raise RuntimeError(f"checkpoint was written with {state.get('world_size')} ranks, "
                               f"this run has {self.world}: exact resume needs the same world size")
        if self.distributed and self.tcfg.distributed == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            set_state_dict(self.objective, self.optimizer, model_state_dict=state["objective"],
                           optim_state_dict=state["optimizer"],
                           options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=False))
        else:
            self.objective.load_state_dict(state["objective"])
            self.optimizer.load_state_dict(state["optimizer"])
        if "objective_extra" in state and hasattr(self.objective, "load_extra_state"):
            self.objective.load_extra_state(state["objective_extra"])  # type: ignore[operator]
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        set_rng_state(state["rng"])

    def save(self) -> Optional[Path]:
        state = self.state_dict()  # collective under FSDP: every rank calls it
        path = None
        if self.is_main:
            path = save_checkpoint(state, self.ckpt_dir, self.step, keep_last=self.tcfg.keep_last)
        dist_utils.barrier()
        return path

    def maybe_resume(self) -> bool:
        if not self.tcfg.resume:
            return False
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            return False
        self.load_state_dict(load_checkpoint(path, map_location="cpu"))
        return True

    # ------------------------------------------------------------------ loop
    def _forward(self, batch: Any) -> Dict[str, Any]:
        ctx = (torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
               if self.amp_dtype is not None else contextlib.nullcontext())
        with ctx:
            out = self.forward_module(batch)
        if not isinstance(out, dict) or "loss" not in out:
            raise TypeError(f"{type(self.objective).__name__}.forward must return a dict with 'loss'")
        return out

    def train_step(self, batches: Iterator[Any]) -> Dict[str, float]:
        """One optimizer step over ``grad_accum`` micro-batches. Returns scalars to log."""
        self.objective.train()
        lr, wd = self._apply_schedules()
        accum = self.tcfg.grad_accum
        logged: Dict[str, float] = {}
        n_samples = 0
        for micro in range(accum):
            batch = move_to_device(next(batches), self.device)
            sync = micro == accum - 1
            no_sync = (self.model.no_sync() if (self.distributed and not sync and hasattr(self.model, "no_sync"))
                       else contextlib.nullcontext())
            with no_sync:
                out = self._forward(batch)
                loss = out["loss"]
                if not torch.isfinite(loss.detach()).all():
                    raise NonFiniteLossError(
                        f"non-finite loss at step {self.step + 1} (micro-batch {micro}): "
                        f"{ {k: _scalar_value(v) for k, v in out.items() if _is_scalar(v)} }; "
                        "lower optim.lr, enable optim.clip_grad or check the data for NaNs")
                (loss / accum).backward()
            for k, v in out.items():
                if _is_scalar(v):
                    logged[k] = logged.get(k, 0.0) + _scalar_value(v) / accum
            n_samples += _batch_size(batch)
        trainable = [p for p in self.objective.parameters() if p.requires_grad]
        if self.ocfg.clip_grad:
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, self.ocfg.clip_grad)
            logged["grad_norm"] = float(grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if hasattr(self.objective, "on_step_end"):
            extra = self.objective.on_step_end(self.step, self.total_steps)  # type: ignore[operator]
            if extra:
                logged.update({k: float(v) for k, v in extra.items()})
        for hook in self.hooks:
            extra = hook(self.step, self.total_steps, self)
            if extra:
                logged.update({k: float(v) for k, v in extra.items()})
        logged.update(lr=lr, wd=wd, samples=float(n_samples))
        return logged

    def fit(self) -> Dict[str, float]:
        """Train to ``train.steps`` (resuming if a checkpoint exists); returns the last logged metrics."""
        resumed = self.maybe_resume()
        logger = MetricsLogger(self.run_dir, enabled=self.is_main, tensorboard=self.tcfg.tensorboard)
        if resumed:
            logger.truncate_after(self.step)
        last: Dict[str, float] = {}
        if self.step >= self.total_steps:
            logger.close()
            return last
        batches = self._batches()
        bar = None
        from sslab.core.progress import show_progress

        if self.is_main and show_progress(self.tcfg.progress):
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, desc=self.run_dir.name, unit="step",
                       dynamic_ncols=True)
        window_t, window_samples = time.perf_counter(), 0.0
        try:
            stop_at = self.total_steps
            if self.tcfg.stop_after is not None:
                stop_at = min(stop_at, self.step + self.tcfg.stop_after)
            while self.step < stop_at:
                values = self.train_step(batches)
                window_samples += values.pop("samples")
                log_now = self.step % max(self.tcfg.log_every, 1) == 0 or self.step in (self.total_steps, stop_at)
                if log_now:
                    elapsed = time.perf_counter() - window_t
                    values = dist_utils.reduce_mean(values, self.device)
                    values["samples_per_s"] = window_samples * self.world / max(elapsed, 1e-9)
                    values["epoch"] = self.epoch
                    window_t, window_samples = time.perf_counter(), 0.0
                    logger.log(self.step, values)
                    last = values
                    if bar is not None:
                        bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}",
                                        sps=f"{values['samples_per_s']:.0f}")
                if bar is not None:
                    bar.update(1)
                if self.tcfg.ckpt_every and self.step % self.tcfg.ckpt_every == 0 and self.step < stop_at:
                    self.save()
            self.save()
        finally:
            if bar is not None:
                bar.close()
            logger.close()
        if self.is_main and logger.path.exists() and self.step >= self.total_steps:
            plot_loss_curve(logger.path, self.run_dir / "loss.png")
        return last


def _is_scalar(v: Any) -> bool:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return True
    return isinstance(v, torch.Tensor) and v.numel() == 1


def _scalar_value(v: Any) -> float:
    """A logged scalar as a float, without touching autograd."""
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        for v in batch.values():
            n = _batch_size(v)
            if n:
                return n
        return 0
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0])
    if hasattr(batch, "num_graphs"):
        return int(batch.num_graphs)
    return 0
