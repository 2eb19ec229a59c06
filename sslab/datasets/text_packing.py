"""Token datasets over :class:`~sslab.datasets.text.TextDocument` lists: per-document items
(metadata and score kept, for MeCo / conditional training), packed fixed-length blocks
(documents concatenated with ``[SEP]`` and cut, as in RoBERTa's FULL-SENTENCES packing), and a
streaming variant for files too large for memory.

Items are dicts of python lists; collators (``text_collate``) pad and mask.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from sslab.datasets.text import TextDocument, iter_corpus
from sslab.datasets.text_tokenizer import CLS, SEP


def _ids(tokenizer: Any, text: str) -> List[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class DocumentDataset(Dataset):
    """One item per document: ``{"input_ids": [CLS] text [SEP], "meta_ids": metadata tokens or [],
    "score": float or None}``. Text is truncated to ``max_len`` tokens (count kept in ``truncated``)."""

    def __init__(self, docs: Sequence[TextDocument], tokenizer: Any, max_len: int = 128,
                 max_meta_len: int = 16) -> None:
        if max_len < 3:
            raise ValueError(f"max_len must be >= 3, got {max_len}")
        if not docs:
            raise ValueError("DocumentDataset needs at least one document")
        cls_id, sep_id = tokenizer.convert_tokens_to_ids([CLS, SEP])
        self.items: List[Dict[str, Any]] = []
        self.truncated = 0
        for d in docs:
            ids = _ids(tokenizer, d.text)
            if len(ids) > max_len - 2:
                self.truncated += 1
                ids = ids[: max_len - 2]
            meta = _ids(tokenizer, d.metadata)[:max_meta_len] if d.metadata else []
            self.items.append({"input_ids": [cls_id, *ids, sep_id], "meta_ids": meta, "score": d.score})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return self.items[i]


def pack_ids(docs_ids: Sequence[Sequence[int]], block_size: int, cls_id: int, sep_id: int,
             drop_last: bool = False) -> List[List[int]]:
    """Concatenate ``[CLS] d1 [SEP] d2 [SEP] ...`` and cut into blocks of ``block_size``; every block
    starts with ``[CLS]`` so that pooled features exist. The last partial block is kept unless
    ``drop_last`` (it is then padded by the collator)."""
    if block_size < 4:
        raise ValueError(f"block_size must be >= 4, got {block_size}")
    stream: List[int] = []
    for ids in docs_ids:
        stream.extend(ids)
        stream.append(sep_id)
    body = block_size - 1
    blocks = [[cls_id, *stream[i:i + body]] for i in range(0, len(stream), body)]
    if blocks and drop_last and len(blocks[-1]) < block_size:
        blocks.pop()
    return blocks


class PackedDataset(Dataset):
    """Fixed-length blocks of packed documents; item = ``{"input_ids": [...]}``."""

    def __init__(self, docs: Sequence[TextDocument], tokenizer: Any, block_size: int = 128,
                 drop_last: bool = False) -> None:
        cls_id, sep_id = tokenizer.convert_tokens_to_ids([CLS, SEP])
        self.blocks = pack_ids([_ids(tokenizer, d.text) for d in docs], block_size, cls_id, sep_id, drop_last)
        if not self.blocks:
            raise ValueError("packing produced no blocks (empty corpus?)")

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {"input_ids": self.blocks[i]}


class StreamingPackedDataset(IterableDataset):
    """Stream ``.txt``/``.jsonl`` files, tokenize and pack on the fly in constant memory.

    DataLoader workers take disjoint documents (document ``k`` goes to worker ``k % num_workers``)."""

    def __init__(self, paths: Sequence[Union[str, Path]], tokenizer: Any, block_size: int = 128,
                 **reader_kwargs: Any) -> None:
        self.paths = [Path(p) for p in paths]
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.reader_kwargs = reader_kwargs

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        cls_id, sep_id = self.tokenizer.convert_tokens_to_ids([CLS, SEP])
        buf: List[int] = [cls_id]
        k = 0
        for path in self.paths:
            for doc in iter_corpus(path, **self.reader_kwargs):
                k += 1
                if (k - 1) % nw != wid:
                    continue
                buf.extend(_ids(self.tokenizer, doc.text))
                buf.append(sep_id)
                while len(buf) >= self.block_size:
                    yield {"input_ids": buf[: self.block_size]}
                    buf = [cls_id, *buf[self.block_size:]]
        if len(buf) > 1:
            yield {"input_ids": buf}


def pad_ids(seqs: Sequence[Sequence[int]], pad_id: int, max_len: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Right-pad lists of ids -> ``input_ids`` [B, L] and ``attention_mask`` [B, L] (1 = token)."""
    if not seqs:
        raise ValueError("cannot collate an empty batch")
    L = max(len(s) for s in seqs) if max_len is None else max_len
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        s = list(s)[:L]
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        att[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": att}
