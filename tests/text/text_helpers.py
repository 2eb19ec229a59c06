"""Helpers shared by the text tests (imported by basename; pytest prepend mode puts this dir on sys.path)."""
from __future__ import annotations

import functools
from typing import Any, List

from sslab.datasets.text import TextDocument, pydoc_topics
from sslab.datasets.text_tokenizer import train_tokenizer


@functools.lru_cache(maxsize=None)
def pydoc_docs(n: int = 25) -> List[TextDocument]:
    """A slice of Python's bundled docs: real text that is always available (stdlib)."""
    return pydoc_topics()[:n]


@functools.lru_cache(maxsize=None)
def pydoc_tokenizer(vocab_size: int = 600) -> Any:
    return train_tokenizer([d.text for d in pydoc_docs()], vocab_size=vocab_size)


def tiny_encoder(tok: Any, **kw: Any):  # type: ignore[no-untyped-def]
    from sslab.encoders.text_transformer import TextTransformer

    args = dict(vocab_size=len(tok), dim=32, depth=2, heads=4, max_len=160)
    args.update(kw)
    return TextTransformer(**args)


import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    """Text tests run tiny ops; with 2 intra-op threads on a busy 2-core box they are ~50x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
