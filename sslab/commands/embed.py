"""``sslab embed RUN_OR_ENCODER INPUTS... --out FILE``: raw files -> features with the encoder's own pipeline.

The encoder folder's ``encoder.json["pipeline"]`` says how raw inputs become encoder inputs (rate, leads,
normalisation, crops, image size, tokenizer, schema, ...); this command applies exactly that pipeline and
the probe's pooling, in batches, on CUDA when available. Output: ``FILE.npy`` plus ``FILE.index.csv``
(row number -> input), or one ``.csv`` / ``.parquet`` table whose ``input`` column names each row.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from sslab.core.registry import COMMANDS

FORMATS = (".npy", ".csv", ".parquet")


def index_path(out: Union[str, Path]) -> Path:
    """``features.npy`` -> ``features.index.csv`` (columns ``row,input``)."""
    out = Path(out)
    return out.with_name(out.stem + ".index.csv")


def write_features(out: Union[str, Path], names: Sequence[str], X: np.ndarray) -> List[Path]:
    """Write features and the names of their inputs; returns the files written."""
    from sslab.core.io import atomic_write

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"--out {out}: use one of {', '.join(FORMATS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        atomic_write(out, lambda tmp: np.save(open(tmp, "wb"), X.astype(np.float32)))
        idx = index_path(out)

        def _index(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["row", "input"])
                w.writerows(enumerate(names))

        atomic_write(idx, _index)
        return [out, idx]
    import pandas as pd

    frame = pd.DataFrame(X.astype(np.float32), columns=[f"f{i}" for i in range(X.shape[1])])
    frame.insert(0, "input", list(names))
    if suffix == ".csv":
        atomic_write(out, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.9g"))
    else:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError(f"--out {out}: writing parquet needs pyarrow (pip install pyarrow); "
                             "or use .npy / .csv") from None
        atomic_write(out, lambda tmp: frame.to_parquet(tmp, index=False))
    return [out]


def embed_files(target: Union[str, Path], inputs: Sequence[Union[str, Path]], batch_size: int = 64,
                device: str = "auto", progress: Optional[bool] = None, allow_resize: bool = False):
    """(row names, features ``[N, D]``) of raw ``inputs`` through ``target``'s encoder and pipeline."""
    from sslab.core.export import load_encoder
    from sslab.core.pipeline import embed_rows
    from sslab.core.trainer import select_device

    encoder = load_encoder(target)
    pipe = encoder.pipeline
    if pipe is None:
        raise ValueError(f"{target}: the encoder records no input pipeline (exported by an older sslab?); "
                         "re-export it or preprocess the inputs yourself")
    if allow_resize:
        pipe.allow_resize = True
    if progress is None:
        progress = sys.stderr.isatty()
    return embed_rows(pipe, encoder, pipe.read(inputs), batch_size, select_device(device), progress)


def _run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    names, X = embed_files(args.target, args.inputs, args.batch_size, args.device, allow_resize=args.allow_resize)
    files = write_features(args.out, names, X)
    print(f"embedded {len(names)} rows -> {X.shape[1]}-d features: {', '.join(map(str, files))}")
    return 0


@COMMANDS.register("embed")
def embed_command(parser: argparse.ArgumentParser) -> None:
    """Raw files -> features with an exported encoder's own input pipeline (npy + index, csv or parquet)."""
    parser.add_argument("target", help="run directory or exported encoder folder")
    parser.add_argument("inputs", nargs="+", help="raw files/folders: WFDB or PTB-XL folder, audio folder, .npz or "
                        "image folder, CSV table, TU folder or SMILES file, text file, .npy/CSV vectors")
    parser.add_argument("--out", required=True, help="features file: .npy (+ .index.csv), .csv or .parquet")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N")
    parser.add_argument("--allow-resize", action="store_true",
                        help="images: resize inputs whose size differs from the training images' (else an error)")
    parser.set_defaults(func=_run)
