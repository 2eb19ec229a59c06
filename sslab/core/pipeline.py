"""Input pipelines: the exact preprocessing an exported encoder was trained and probed with, as data.

A modality's ``input_pipeline()`` returns a JSON-serialisable dict with a ``"kind"`` (the modality name)
that is stored in ``encoder/encoder.json`` under ``"pipeline"``. ``build_pipeline(spec, folder)`` turns it
back into an :class:`InputPipeline` (registered in :data:`PIPELINES` under the same kind) that needs
nothing but that dict and the encoder folder (tokenizer files are copied into it):

* ``read(paths)`` -> ``(row_name, item)`` for every row of raw files (WFDB folders, audio folders, CSVs, ...);
* ``preprocess(raw, **meta)`` -> one ``item`` from an in-memory raw sample (array, waveform, text, ...);
* ``collate(items)`` -> the batch ``inputs`` the modality's probe feeds ``embed``;
* ``embed(encoder, inputs)`` -> ``[B, D]`` features, the probe's pooling.

Input that does not match the pipeline (other lead set, image size, table schema, feature count) raises
:class:`InputMismatch`, which says what was expected.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from sslab.core.errors import UserError
from sslab.core.registry import PIPELINES

PathLike = Union[str, Path]


class InputMismatch(UserError, ValueError):
    """Raw input that does not match the encoder's input pipeline; the message says what was expected."""


class InputPipeline:
    """Base class; subclasses register with ``@PIPELINES.register("<modality>")``.

    ``files``: names of files (relative to the encoder folder) the pipeline needs, e.g. ``tokenizer.json``.
    """

    files: Tuple[str, ...] = ()
    usage = "enc.embed_raw(raw)"  # a one-line example for the model card

    def __init__(self, spec: Mapping[str, Any], folder: Optional[PathLike] = None) -> None:
        self.spec = dict(spec)
        self.folder = Path(folder) if folder is not None else None

    # -- to implement
    def read(self, paths: Sequence[PathLike]) -> Iterator[Tuple[str, Any]]:
        raise NotImplementedError(f"{type(self).__name__} cannot read raw files")

    def preprocess(self, raw: Any, **meta: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no in-memory preprocessing")

    def collate(self, items: Sequence[Any]) -> Any:
        return torch.utils.data.default_collate(list(items))

    def embed(self, encoder: nn.Module, inputs: Any) -> torch.Tensor:
        return encoder.pool(encoder(inputs))

    def describe(self) -> List[str]:
        """Markdown bullet lines for the model card."""
        return [f"- `{k}`: {_short(v)}" for k, v in self.spec.items() if k != "kind"]

    # -- helpers
    def file(self, name: str) -> Path:
        """A file copied into the encoder folder (e.g. the tokenizer); error if absent."""
        if self.folder is None:
            raise FileNotFoundError(f"{self.spec.get('kind')} pipeline needs {name} but has no encoder folder")
        path = self.folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; the encoder folder must carry the {self.spec.get('kind')} "
                                    f"pipeline's {name}")
        return path


def _short(value: Any, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def build_pipeline(spec: Optional[Mapping[str, Any]], folder: Optional[PathLike] = None) -> Optional[InputPipeline]:
    """The :class:`InputPipeline` of a stored pipeline dict (``None`` or ``{}`` -> ``None``)."""
    if not spec:
        return None
    if "kind" not in spec:
        raise ValueError(f"input pipeline needs a 'kind' (one of: {', '.join(PIPELINES.names())}); got keys "
                         f"{sorted(spec)}")
    return PIPELINES.get(str(spec["kind"]))(spec, folder)


def expand_paths(paths: Sequence[PathLike], suffixes: Sequence[str]) -> List[Path]:
    """Files given directly, plus files with one of ``suffixes`` under given folders (sorted, recursive)."""
    out: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in suffixes)
            if not found:
                raise FileNotFoundError(f"{p}: no files with suffix {', '.join(suffixes)}")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def batches(rows: Iterator[Tuple[str, Any]], size: int) -> Iterator[Tuple[List[str], List[Any]]]:
    """Group ``(name, item)`` rows into lists of at most ``size``."""
    names: List[str] = []
    items: List[Any] = []
    for name, item in rows:
        names.append(name)
        items.append(item)
        if len(items) == size:
            yield names, items
            names, items = [], []
    if items:
        yield names, items


def embed_rows(pipeline: InputPipeline, encoder: nn.Module, rows: Iterator[Tuple[str, Any]], batch_size: int = 64,
               device: Union[str, torch.device] = "cpu", progress: bool = False,
               total: Optional[int] = None) -> Tuple[List[str], "Any"]:
    """Embed ``(name, item)`` rows in batches -> (names, float32 numpy ``[N, D]``)."""
    import numpy as np
    from tqdm.auto import tqdm

    from sslab.core.trainer import move_to_device

    encoder = encoder.to(device).eval()
    names: List[str] = []
    feats: List[np.ndarray] = []
    bar = tqdm(total=total, disable=not progress, unit="row", desc="embed")
    with torch.no_grad():
        for nb, items in batches(rows, batch_size):
            z = pipeline.embed(encoder, move_to_device(pipeline.collate(items), device))
            feats.append(z.float().cpu().numpy())
            names.extend(nb)
            bar.update(len(nb))
    bar.close()
    if not feats:
        raise ValueError("no input rows to embed")
    return names, np.concatenate(feats)


def jsonable(obj: Any) -> Any:
    """Numpy/torch scalars and arrays -> JSON types (recursively)."""
    import numpy as np

    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


__all__ = ["PIPELINES", "InputMismatch", "InputPipeline", "build_pipeline", "expand_paths", "embed_rows",
           "jsonable"]
