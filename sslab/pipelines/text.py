"""``text`` pipeline: the run's WordPiece tokenizer (``tokenizer.json`` in the encoder folder) -> at most
``max_len`` ids (the first ``max_len - 1`` plus the final [SEP]) -> right padding -> masked mean pooling."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import torch
from torch import nn

from sslab.core.pipeline import InputPipeline, PathLike, expand_paths
from sslab.core.registry import PIPELINES


@PIPELINES.register("text")
class TextPipeline(InputPipeline):
    """Spec keys: ``tokenizer`` (file name in the encoder folder), ``max_len``, ``text_column`` (CSV input)."""

    usage = 'enc.embed_raw(["a text", "another"])'

    files = ("tokenizer.json",)

    def __init__(self, spec: Any, folder: Any = None) -> None:
        super().__init__(spec, folder)
        self._tok: Any = None

    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            from sslab.datasets.text_tokenizer import load_tokenizer

            self._tok = load_tokenizer(self.file(self.spec.get("tokenizer", "tokenizer.json")))
        return self._tok

    def encode(self, text: str) -> Dict[str, List[int]]:
        n = int(self.spec["max_len"])
        ids = self.tokenizer(text)["input_ids"]
        return {"input_ids": ids[: n - 1] + [ids[-1]] if len(ids) > n else ids}

    def preprocess(self, raw: Any, **meta: Any) -> List[Dict[str, List[int]]]:
        """``raw``: a string or a list of strings (one document each)."""
        texts = [raw] if isinstance(raw, str) else list(raw)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"text input {bad[0]} is a {type(texts[bad[0]]).__name__}, expected a string")
        return [self.encode(t) for t in texts]

    def read(self, paths: Sequence[PathLike]) -> Iterator[Tuple[str, Any]]:
        """Text files: one document per non-empty line (rows ``file:line``); CSV files: the ``text_column``
        column (rows ``file:row``, 0-based)."""
        for path in expand_paths(paths, (".txt", ".csv", ".tsv")):
            if path.suffix.lower() in (".csv", ".tsv"):
                import pandas as pd

                df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
                col = self.spec.get("text_column", "text")
                if col not in df.columns:
                    raise ValueError(f"{path}: no text column {col!r}; found {list(df.columns)}")
                empty = df[col].isna()
                if empty.any():
                    raise ValueError(f"{path}: {int(empty.sum())} empty text cell(s) (first row {int(empty.idxmax())})")
                for i, text in enumerate(df[col].astype(str)):
                    yield f"{path}:{i}", self.encode(text)
            else:
                for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
                    if line.strip():
                        yield f"{path}:{i}", self.encode(line)

    def collate(self, items: Sequence[Dict[str, List[int]]]) -> Dict[str, torch.Tensor]:
        from sslab.datasets.text_packing import pad_ids
        from sslab.datasets.text_tokenizer import PAD_ID

        return pad_ids([it["input_ids"] for it in items], PAD_ID)

    def embed(self, encoder: nn.Module, inputs: Any) -> torch.Tensor:
        return encoder.pool(encoder(inputs), inputs["attention_mask"])

    def describe(self) -> List[str]:
        s = self.spec
        return [f"- tokenizer: `{s.get('tokenizer')}` in this folder (WordPiece, vocabulary {s.get('vocab_size')}, "
                f"lowercase={s.get('lowercase')})",
                f"- at most {s['max_len']} tokens: longer texts keep the first {int(s['max_len']) - 1} and the last",
                f"- features: {s.get('pooling')}"]
