"""Shared tokenization of column names and cell values (UniTabE, Yang et al. ICLR 2024, Sec. 3.1).

One HF ``tokenizers`` WordPiece vocabulary is trained on the column names and the non-numeric values of
all pretraining tables, so a column never seen in pretraining still maps to known sub-words.
Numbers are rendered at a fixed number of significant digits (no scientific notation) and split into
one token per character; each digit carries a *place-value position* (``16 + exponent``) so ``38`` and
``83`` differ and ``0.5`` / ``5`` / ``50`` line up digit by digit.  Missing cells get ``[MISSING]``.

:class:`TokenizedTable` pre-tokenizes a :class:`~sslab.datasets.tables.Table` once into fixed-width
integer arrays; :class:`TableRows` serves rows of one or several tables (any schemas) and
:class:`TableCollator` pads rows to the widest table in a batch and draws cell masks and column views.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from sslab.datasets.tables import COLUMN_TYPES, Table, TableError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[MASK]", "[MISSING]", "[BOS]", "[EOS]"]
PAD, UNK, CLS, MASK, MISSING, BOS, EOS = range(len(SPECIAL_TOKENS))
NUMBER_CHARS = list("0123456789.-")
TYPE_IDS = {t: i for i, t in enumerate(COLUMN_TYPES)}
NAME_LEN = 8  # column-name tokens per cell
VALUE_LEN = 12  # value tokens per cell
N_POS = 32  # value-token positions (text: index; digits: 16 + exponent, clipped)
POS_ZERO_EXP = 16


def render_number(x: float, digits: int = 4) -> str:
    """``x`` at ``digits`` significant digits, positional notation, trailing zeros/point trimmed."""
    if not math.isfinite(x):
        raise ValueError(f"cannot render non-finite number {x!r}")
    if x == 0:
        return "0"
    return np.format_float_positional(x, precision=digits, unique=False, fractional=False, trim="-")


def number_positions(text: str) -> List[int]:
    """Place-value position per character of a rendered number: digits 16+exponent, '.' and '-' 0."""
    int_part = text.lstrip("-").split(".")[0]
    n_int = len(int_part)
    out, seen_point, i_digit, f_digit = [], False, 0, 0
    for ch in text:
        if ch == "-":
            out.append(0)
        elif ch == ".":
            seen_point = True
            out.append(0)
        elif not seen_point:
            out.append(min(max(POS_ZERO_EXP + n_int - 1 - i_digit, 1), N_POS - 1))
            i_digit += 1
        else:
            f_digit += 1
            out.append(min(max(POS_ZERO_EXP - f_digit, 1), N_POS - 1))
    return out


class TableTokenizer:
    """WordPiece over names + values shared by all tables; numbers as place-valued digit tokens."""

    def __init__(self, tokenizer: Any, digits: int = 4) -> None:
        self.tok = tokenizer
        self.digits = digits
        self._char_ids = {c: tokenizer.token_to_id(c) for c in NUMBER_CHARS}
        missing = [c for c, i in self._char_ids.items() if i is None]
        if missing:
            raise TableError(f"tokenizer vocabulary lacks number characters {missing}")
        for i, t in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(t) != i:
                raise TableError(f"tokenizer special token {t!r} must have id {i}")

    # ---------------------------------------------------------------- building / saving
    @staticmethod
    def _blank(vocab: Optional[Dict[str, int]] = None) -> Any:
        from tokenizers import Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import WordPiece

        tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]") if vocab else WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents(), normalizers.Replace("_", " ")]
        )
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
        )
        return tok

    @classmethod
    def train(cls, tables: Sequence[Table], vocab_size: int = 4000, digits: int = 4,
              extra_text: Iterable[str] = ()) -> "TableTokenizer":
        """Train WordPiece on every column name and every distinct non-numeric value of ``tables``."""
        from tokenizers.trainers import WordPieceTrainer

        # every letter / punctuation also as a '##' continuation piece, so unseen words never collapse to [UNK]
        letters = "abcdefghijklmnopqrstuvwxyz"
        corpus: List[str] = [letters, "z" + letters[:1], "!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~!"] + list(extra_text)
        for t in tables:
            for spec in t.schema.columns:
                corpus.append(spec.name)
                if spec.type != "numeric":
                    corpus.extend(str(v) for v in t.frame[spec.name].dropna().unique())
        tok = cls._blank()
        trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                   initial_alphabet=NUMBER_CHARS + list("abcdefghijklmnopqrstuvwxyz"),
                                   min_frequency=1, show_progress=False)
        tok.train_from_iterator(corpus, trainer=trainer)
        # the trainer assigns ids in hash-map order; renumber (specials first, then sorted) so the same
        # corpus always gives the same ids
        learned = sorted(t for t in tok.get_vocab() if t not in SPECIAL_TOKENS)
        vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + learned)}
        return cls(cls._blank(vocab), digits)

    def to_str(self) -> str:
        return self.tok.to_str()

    @classmethod
    def from_str(cls, text: str, digits: int = 4) -> "TableTokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(text), digits)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    # ---------------------------------------------------------------- encoding
    def encode_texts(self, texts: Sequence[str], max_len: int) -> List[List[int]]:
        return [e.ids[:max_len] for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode_number(self, x: float) -> Tuple[List[int], List[int]]:
        text = render_number(float(x), self.digits)[:VALUE_LEN]
        return [self._char_ids[c] for c in text], number_positions(text)

    def encode_value(self, value: Any, ctype: str) -> Tuple[List[int], List[int]]:
        """Token ids and positions of one cell (``None``/NaN -> ``[MISSING]``)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return [MISSING], [0]
        if ctype == "numeric":
            return self.encode_number(value)
        ids = self.encode_texts([str(value)], VALUE_LEN)[0] or [UNK]
        return ids, list(range(len(ids)))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([i for i in ids if i != PAD], skip_special_tokens=False)


def _pad(seq: Sequence[int], n: int) -> List[int]:
    return list(seq[:n]) + [PAD] * (n - len(seq[:n]))


class TokenizedTable:
    """A table tokenized once: ``name_ids [C, NAME_LEN]``, ``value_ids/value_pos [R, C, VALUE_LEN]``,
    ``type_ids [C]``, ``num_z [R, C]`` (z-scored numeric value, 0 where missing/not numeric),
    ``num_valid [R, C]``."""

    def __init__(self, table: Table, tokenizer: TableTokenizer,
                 num_stats: Optional[Dict[str, Tuple[float, float]]] = None) -> None:
        """``num_stats``: per numeric column (mean, std) for ``num_z`` — pass a training split's
        ``.num_stats`` when tokenizing its test split; by default computed on ``table``."""
        self.table = table
        self.num_stats: Dict[str, Tuple[float, float]] = {}
        cols = table.schema.columns
        R, C = len(table), len(cols)
        self.columns = [c.name for c in cols]
        self.name_ids = torch.tensor([_pad(ids or [UNK], NAME_LEN) for ids in
                                      tokenizer.encode_texts(self.columns, NAME_LEN)], dtype=torch.long)
        self.type_ids = torch.tensor([TYPE_IDS[c.type] for c in cols], dtype=torch.long)
        value_ids = np.zeros((R, C, VALUE_LEN), dtype=np.int64)
        value_pos = np.zeros((R, C, VALUE_LEN), dtype=np.int64)
        num_z = np.zeros((R, C), dtype=np.float32)
        num_valid = np.zeros((R, C), dtype=bool)
        for j, spec in enumerate(cols):
            col = table.frame[spec.name]
            cache: Dict[Any, Tuple[List[int], List[int]]] = {}
            values = col.tolist()
            uniq = {v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if spec.type != "numeric":
                uniq_list = sorted(map(str, uniq))
                for u, ids in zip(uniq_list, tokenizer.encode_texts(uniq_list, VALUE_LEN)):
                    cache[u] = (ids or [UNK], list(range(len(ids or [UNK]))))
            for i, v in enumerate(values):
                key = v if spec.type == "numeric" else (None if v is None else str(v))
                if key is None or (isinstance(key, float) and math.isnan(key)):
                    ids, pos = [MISSING], [0]
                else:
                    if key not in cache:
                        cache[key] = tokenizer.encode_value(key, spec.type)
                    ids, pos = cache[key]
                value_ids[i, j, : len(ids)] = ids
                value_pos[i, j, : len(pos)] = pos
            if spec.type == "numeric":
                arr = col.to_numpy(dtype=np.float64)
                ok = np.isfinite(arr)
                if num_stats is not None and spec.name in num_stats:
                    mu, sd = num_stats[spec.name]
                else:
                    mu, sd = float(arr[ok].mean()), float(arr[ok].std()) or 1.0
                self.num_stats[spec.name] = (mu, sd)
                num_z[ok, j] = np.clip((arr[ok] - mu) / sd, -5, 5)
                num_valid[:, j] = ok
        self.value_ids = torch.from_numpy(value_ids)
        self.value_pos = torch.from_numpy(value_pos)
        self.num_z = torch.from_numpy(num_z)
        self.num_valid = torch.from_numpy(num_valid)

    def __len__(self) -> int:
        return self.value_ids.shape[0]

    def row(self, i: int) -> Dict[str, torch.Tensor]:
        return {"name_ids": self.name_ids, "value_ids": self.value_ids[i], "value_pos": self.value_pos[i],
                "type_ids": self.type_ids, "num_z": self.num_z[i], "num_valid": self.num_valid[i]}


class TableRows(Dataset):
    """Rows of several tokenized tables (different schemas) as one dataset.

    ``labels=None``: items are row dicts (pretraining). ``labels`` given (one table): items are
    ``(row, label)`` for probing / fine-tuning.
    """

    def __init__(self, tables: Sequence[TokenizedTable], labels: Optional[np.ndarray] = None) -> None:
        if not tables:
            raise TableError("TableRows needs at least one table")
        self.tables = list(tables)
        self.offsets = np.cumsum([0] + [len(t) for t in self.tables])
        if labels is not None:
            if len(self.tables) != 1 or len(labels) != len(self.tables[0]):
                raise TableError("labelled TableRows needs exactly one table with one label per row")
        self.labels = labels

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, idx: int) -> Any:
        if not 0 <= idx < len(self):
            raise IndexError(f"row {idx} out of range for {len(self)} rows")
        t = int(np.searchsorted(self.offsets, idx, side="right") - 1)
        row = self.tables[t].row(idx - int(self.offsets[t]))
        if self.labels is None:
            return row
        return row, self.labels[idx]


@dataclass
class TableCollator:
    """Pad rows to the widest table in the batch; draw masked cells and column-partition views.

    ``mask_ratio``: fraction of each row's cells whose value is hidden (at least one, at most all but
    one). ``n_views`` > 0 adds ``views [V, B, C]``: overlapping column subsets of each row, each keeping
    ``view_ratio`` of the cells (TransTab / UniTabE column-partition contrastive).
    """

    mask_ratio: float = 0.0
    n_views: int = 0
    view_ratio: float = 0.6

    def pad(self, rows: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        B, C = len(rows), max(r["type_ids"].shape[0] for r in rows)
        out = {
            "name_ids": torch.zeros(B, C, NAME_LEN, dtype=torch.long),
            "value_ids": torch.zeros(B, C, VALUE_LEN, dtype=torch.long),
            "value_pos": torch.zeros(B, C, VALUE_LEN, dtype=torch.long),
            "type_ids": torch.zeros(B, C, dtype=torch.long),
            "num_z": torch.zeros(B, C),
            "num_valid": torch.zeros(B, C, dtype=torch.bool),
            "cell_mask": torch.zeros(B, C, dtype=torch.bool),
        }
        for b, r in enumerate(rows):
            c = r["type_ids"].shape[0]
            for k in ("name_ids", "value_ids", "value_pos", "type_ids", "num_z", "num_valid"):
                out[k][b, :c] = r[k]
            out["cell_mask"][b, :c] = True
        return out

    def _random_subset(self, valid: torch.Tensor, ratio: float, min_keep: int, max_keep_offset: int) -> torch.Tensor:
        """Per row, choose round(ratio * n) valid cells (clamped to [min_keep, n - max_keep_offset])."""
        B, C = valid.shape
        n = valid.sum(1)
        k = torch.clamp(torch.round(ratio * n.float()).long(), min=min_keep)
        k = torch.minimum(k, torch.clamp(n - max_keep_offset, min=min_keep))
        scores = torch.rand(B, C).masked_fill(~valid, 2.0)
        ranks = scores.argsort(1).argsort(1)
        return (ranks < k[:, None]) & valid

    def __call__(self, items: Sequence[Any]) -> Any:
        labelled = isinstance(items[0], tuple)
        rows = [it[0] for it in items] if labelled else list(items)
        batch = self.pad(rows)
        if self.mask_ratio > 0:
            batch["mask"] = self._random_subset(batch["cell_mask"], self.mask_ratio, 1, 1)
        if self.n_views > 0:
            batch["views"] = torch.stack([self._random_subset(batch["cell_mask"], self.view_ratio, 1, 0)
                                          for _ in range(self.n_views)])
        if labelled:
            labels = torch.as_tensor(np.asarray([it[1] for it in items]))
            return batch, labels
        return batch
