"""Sampling for speech corpora: multilingual temperature sampling and length bucketing.

Temperature sampling (Conneau et al. 2020, XLSR eq. 1; IndicWav2Vec, Javed et al. 2021 use
alpha = 0.7): language ``l`` with share ``p_l`` of the data (hours if durations are known, else
utterances) is drawn with probability ``q_l = p_l^alpha / sum_k p_k^alpha``; utterances are uniform
within a language. ``alpha = 1`` keeps the natural distribution, ``alpha -> 0`` tends to uniform over
languages, up-sampling low-resource languages.

Length bucketing ("sortish" batching as in fairseq/ESPnet) lives in the core sampler
(``sslab.core.data.ResumableBatchSampler``, ``train.length_bucketing: N``); it reads the dataset's
``lengths``, which :class:`TemperatureResampledDataset` forwards from its base corpus.
:func:`padding_fraction` measures what it saves.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset


def language_probabilities(languages: Sequence[Optional[str]], sizes: Optional[Sequence[float]] = None,
                           alpha: float = 0.7) -> Dict[str, float]:
    """``q_l`` per language (see module docstring). ``None`` languages are grouped as ``"unknown"``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"temperature alpha must be in [0, 1], got {alpha}")
    if not languages:
        raise ValueError("cannot compute language probabilities of an empty corpus")
    sizes = list(sizes) if sizes is not None else [1.0] * len(languages)
    if len(sizes) != len(languages):
        raise ValueError(f"{len(languages)} languages but {len(sizes)} sizes")
    totals: Dict[str, float] = defaultdict(float)
    for lang, s in zip(languages, sizes):
        if s < 0 or not np.isfinite(s):
            raise ValueError(f"size {s} of a {lang!r} item is not a finite non-negative number")
        totals[lang or "unknown"] += float(s)
    total = sum(totals.values())
    if total <= 0:
        raise ValueError("all item sizes are zero")
    powered = {k: (v / total) ** alpha for k, v in totals.items()}
    z = sum(powered.values())
    return {k: v / z for k, v in powered.items()}


def temperature_weights(languages: Sequence[Optional[str]], sizes: Optional[Sequence[float]] = None,
                        alpha: float = 0.7) -> np.ndarray:
    """Per-item sampling weights (sum 1): ``q_l / n_l`` for an item of language ``l``."""
    q = language_probabilities(languages, sizes, alpha)
    counts = Counter(lang or "unknown" for lang in languages)
    w = np.array([q[lang or "unknown"] / counts[lang or "unknown"] for lang in languages], dtype=np.float64)
    return w / w.sum()


class TemperatureResampledDataset(Dataset):
    """A fixed multilingual re-sampling of ``base``: item ``i`` is ``base[draw[i]]``.

    ``num_samples`` draws (default ``len(base)``) are made once from :func:`temperature_weights`
    with a seeded generator, so any trainer's shuffling/resume logic applies unchanged.
    """

    def __init__(self, base: Dataset, languages: Sequence[Optional[str]], sizes: Optional[Sequence[float]] = None,
                 alpha: float = 0.7, num_samples: Optional[int] = None, seed: int = 0) -> None:
        if len(languages) != len(base):  # type: ignore[arg-type]
            raise ValueError(f"{len(languages)} languages for a dataset of {len(base)} items")  # type: ignore[arg-type]
        self.base = base
        self.weights = temperature_weights(languages, sizes, alpha)
        n = num_samples or len(base)  # type: ignore[arg-type]
        rng = np.random.default_rng(seed)
        self.draw = rng.choice(len(self.weights), size=n, replace=True, p=self.weights)

    def __len__(self) -> int:
        return len(self.draw)

    def __getitem__(self, i: int):
        return self.base[int(self.draw[i])]

    @property
    def lengths(self) -> List[int]:
        """``base.lengths`` of the drawn items (for the trainer's ``train.length_bucketing``)."""
        base_lengths = getattr(self.base, "lengths", None)
        if base_lengths is None:
            raise AttributeError(f"{type(self.base).__name__} has no `lengths`; length bucketing needs them")
        return [int(base_lengths[int(j)]) for j in self.draw]


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Fraction of padded samples when each batch is padded to its longest item."""
    lengths = np.asarray(lengths)
    real = padded = 0
    for b in batches:
        ls = lengths[list(b)]
        real += int(ls.sum())
        padded += int(ls.max()) * len(ls)
    return 1.0 - real / padded if padded else 0.0
