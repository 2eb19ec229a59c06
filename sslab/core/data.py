"""Deterministic, resumable data order and randomness.

The sampler yields, for each rank, its shard of a per-epoch permutation, starting from any position.
Every sample carries a seed derived from (seed, epoch, global position) and every batch a seed from
(seed, epoch, rank, batch index); :class:`SeededDataset` and :class:`SeededCollate` seed torch, numpy
and ``random`` with them around ``dataset[i]`` and ``collate_fn(samples)``. Crops, augmentations and
masks are therefore the same whatever the number of workers, and a resumed run sees exactly the data
and masks the uninterrupted run would have seen.

Cost: saving and restoring the three global RNG states (~100 us, mostly numpy's ``get_state``) is done
once per batch by :class:`SeededBatches` (``__getitems__``), not once per sample; only the reseeding
(~10 us) is per sample. The random stream is the same as the per-sample reference
(:class:`SeededDataset` + :class:`SeededCollate`).
"""
from __future__ import annotations

import contextlib
import random
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate, get_worker_info

_MIX = 0x9E3779B97F4A7C15


def mix_seed(*parts: int) -> int:
    """Combine integers into one 63-bit seed (splitmix64-style, stable across processes)."""
    h = 0x2545F4914F6CDD1D
    for p in parts:
        h ^= (int(p) + _MIX + (h << 6) + (h >> 2)) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def mix_seeds(*parts: "int | np.ndarray") -> np.ndarray:
    """:func:`mix_seed` over arrays: each part is an int or a 1-D integer array (broadcast); the same values,
    computed with wrapping uint64 arithmetic in a few numpy operations instead of a Python loop per seed."""
    h = np.full((), 0x2545F4914F6CDD1D, dtype=np.uint64)
    mask31, c = np.uint64(31), np.uint64(0xBF58476D1CE4E5B9)
    with np.errstate(over="ignore"):
        for p in parts:
            v = np.asarray(p % 2**64 if isinstance(p, int) else p).astype(np.uint64)
            h = h ^ (v + np.uint64(_MIX) + (h << np.uint64(6)) + (h >> np.uint64(2)))
            h = h * c
            h = h ^ (h >> mask31)
    return h & np.uint64(0x7FFFFFFFFFFFFFFF)


def seed_all(seed: int) -> None:
    """Seed torch (CPU generator only: ``torch.manual_seed`` also seeds CUDA, slow per sample), numpy and ``random``."""
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


class preserved_rng:
    """Context manager: save the global torch (CPU), numpy and ``random`` states; restore them afterwards."""

    def __enter__(self) -> None:
        self._torch = torch.get_rng_state()
        self._np = np.random.get_state()
        self._py = random.getstate()

    def __exit__(self, *exc: Any) -> None:
        torch.set_rng_state(self._torch)
        np.random.set_state(self._np)
        random.setstate(self._py)


class seeded_rng(preserved_rng):
    """Context manager: seed torch (CPU), numpy and ``random`` with ``seed``; restore afterwards."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        super().__enter__()
        seed_all(self.seed)


Key = Tuple[int, int, int]  # (dataset index, sample seed, batch seed)


class ResumableBatchSampler(Sampler[List[Key]]):
    """Batches of ``(index, sample_seed, batch_seed)`` for one rank, resumable at any batch.

    Global order: ``randperm(n)`` seeded by (seed, epoch). Rank ``r`` of ``w`` takes positions
    ``r, r + w, r + 2w, ...`` so that one step of ``w`` ranks with batch ``b`` covers exactly the
    positions one process with batch ``w * b`` would cover. Incomplete last batches are dropped
    (the same number of steps on every rank).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, lengths: Optional[Sequence[int]] = None,
                 bucket_pool: int = 0) -> None:
        if n <= 0:
            raise ValueError("the training dataset is empty")
        if batch_size * world_size > n:
            raise ValueError(
                f"the training dataset has {n} samples, fewer than one global batch "
                f"({batch_size} x {world_size} ranks); lower train.batch_size"
            )
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        if bucket_pool and (lengths is None or len(lengths) != n):
            raise ValueError("length bucketing needs one length per sample (the dataset's `lengths`)")
        self.lengths, self.bucket_pool = lengths, bucket_pool
        self.epoch = 0
        self.start_batch = 0

    def __len__(self) -> int:
        return (self.n // self.world_size) // self.batch_size - self.start_batch

    @property
    def batches_per_epoch(self) -> int:
        return (self.n // self.world_size) // self.batch_size

    def set_position(self, epoch: int, batch: int) -> None:
        self.epoch, self.start_batch = epoch, batch

    def __iter__(self) -> Iterator[List[Key]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per_rank = self.n // self.world_size
        positions = list(range(self.rank, per_rank * self.world_size, self.world_size))
        batches = [positions[b * self.batch_size:(b + 1) * self.batch_size] for b in range(self.batches_per_epoch)]
        if self.bucket_pool:
            batches = self._bucketed(positions, order)
        for b in range(self.start_batch, self.batches_per_epoch):
            batch_seed = mix_seed(self.seed, self.epoch, self.rank, b, 1)
            sample_seeds = mix_seeds(self.seed, self.epoch, np.asarray(batches[b], dtype=np.int64), 2).tolist()
            yield [(order[p], s, batch_seed) for p, s in zip(batches[b], sample_seeds)]

    def _bucketed(self, positions: List[int], order: List[int]) -> List[List[int]]:
        """Sort pools of ``batch_size * bucket_pool`` positions by sample length, cut into batches and
        shuffle the batches (fairseq-style length bucketing: similar lengths share a batch, less padding)."""
        assert self.lengths is not None
        kept = positions[: self.batches_per_epoch * self.batch_size]
        pool = self.batch_size * self.bucket_pool
        batches: List[List[int]] = []
        for start in range(0, len(kept), pool):
            chunk = sorted(kept[start:start + pool], key=lambda p: self.lengths[order[p]])  # type: ignore[index]
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, self.rank, 3))
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


class SeededDataset(Dataset):
    """Wraps a dataset so ``ds[(i, sample_seed, batch_seed)]`` runs ``base[i]`` under ``sample_seed``.

    The per-sample reference: :class:`SeededBatches` produces the same batches at a fraction of the cost.
    """

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> Tuple[Any, int]:
        index, sample_seed, batch_seed = key
        with seeded_rng(sample_seed):
            return self.base[index], batch_seed


class SeededCollate:
    """Runs the user collate function under the batch seed carried by the samples."""

    def __init__(self, collate_fn: Optional[Callable[[Sequence[Any]], Any]]) -> None:
        self.collate_fn = collate_fn or default_collate

    def __call__(self, items: Sequence[Tuple[Any, int]]) -> Any:
        samples = [s for s, _ in items]
        with seeded_rng(items[0][1]):
            return self.collate_fn(samples)


class SeededBatches(Dataset):
    """``ds.__getitems__(keys)`` -> the collated batch of ``keys`` (from :class:`ResumableBatchSampler`).

    Same random stream as ``SeededCollate(collate_fn)([SeededDataset(base)[k] for k in keys])``: each
    ``base[i]`` runs right after seeding with its sample seed and ``collate_fn`` right after seeding with
    the batch seed, but the global RNG states are saved and restored once per batch instead of once per
    sample (and not at all in a DataLoader worker). Use with ``DataLoader(..., batch_sampler=sampler, collate_fn=passthrough)``; works the same in
    DataLoader workers.
    """

    def __init__(self, base: Dataset, collate_fn: Optional[Callable[[Sequence[Any]], Any]] = None) -> None:
        self.base = base
        self.collate_fn = collate_fn or default_collate

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> Any:
        """One sample (not collated) under its sample seed."""
        index, sample_seed, _ = key
        with seeded_rng(sample_seed):
            return self.base[index]

    def __getitems__(self, keys: Sequence[Key]) -> Any:
        if not keys:
            raise ValueError("SeededBatches got an empty batch of keys")
        # in a DataLoader worker nothing else draws from the worker's global RNGs: no need to restore them
        with preserved_rng() if get_worker_info() is None else contextlib.nullcontext():
            samples = []
            for index, sample_seed, _ in keys:
                seed_all(sample_seed)
                samples.append(self.base[index])
            seed_all(keys[0][2])
            return self.collate_fn(samples)


def passthrough(batch: Any) -> Any:
    """DataLoader ``collate_fn`` for datasets whose ``__getitems__`` already returns a collated batch."""
    return batch


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Recursively move tensors (and objects with ``.to``, e.g. PyG batches) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch
