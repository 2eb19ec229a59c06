"""Vision modality plugin: 2D images (medical and natural) for SiT and POA on timm ViTs.

``data:`` section (all optional)::

    source: digits          # digits (scikit-learn, embedded) | npz (MedMNIST) | folder (image folder)
    path: ""                # .npz file or image folder
    img_size: 16            # images are resized to this (multiple of the encoder patch size)
    channels: 1             # 1 = grayscale, 3 = RGB (grayscale sources are repeated)
    shuffle_seed: 0         # MedMNIST subsets are ordered by class: a seeded shuffle before any subset
    max_items: null         # pretraining subset (after shuffling)
    augment: batched        # batched (one grid_sample per view per batch) | monai (per-sample MONAI)
    n_global: 2             # DINO multi-crop: global views at img_size ...
    n_local: 0              # ... and local views at local_size
    local_size: 0           # 0: img_size // 2 rounded down to the patch size
    global_scale: [0.4, 1.0]
    local_scale: [0.05, 0.4]
    flip_prob: 0.5
    vertical_flip_prob: 0.0
    affine_prob: 0.5        # random rotation (batched) / MONAI RandAffine
    rotate_deg: 10.0
    noise_prob: 0.0
    mean: 0.5               # normalisation after intensity scaling to [0, 1]
    std: 0.25
    probe_split: test       # npz: evaluation split (val | test); train split for the probe's training
    probe_max_train: null
    probe_max_test: null
    folder_test_fraction: 0.2
    probe: {}               # transfer: probe data, e.g. {source: npz, path: breastmnist.npz}

Transfer (``data.probe``): any of the keys above, merged over the pretraining section; probe images are
resized to the pretraining ``img_size`` and grayscale is repeated to RGB for a 3-channel encoder. Refused
before pretraining (:meth:`VisionModality.check_probe_compatible`): a ``data.probe`` ``img_size`` or
``channels`` other than the pretraining one (the encoder's input is fixed), RGB probe images for a
1-channel encoder (averaging would discard colour silently), a missing probe file.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from sslab.core.config import ConfigError, from_dict
from sslab.core.modality import Modality, ProbeTask
from sslab.core.registry import DATASETS, MODALITIES
from sslab.datasets.images import (BatchedMultiCrop, EvalTransform, ImageArray, ImageDataset, MultiCropViews,
                                   Normalize, collate_views)
from sslab.objectives.sit import GroupMaskCorruptor


@dataclass
class VisionDataConfig:
    source: str = "digits"
    path: str = ""
    img_size: int = 16
    channels: int = 1
    shuffle_seed: int = 0
    max_items: Optional[int] = None
    augment: str = "batched"
    n_global: int = 2
    n_local: int = 0
    local_size: int = 0
    global_scale: Tuple[float, float] = (0.4, 1.0)
    local_scale: Tuple[float, float] = (0.05, 0.4)
    flip_prob: float = 0.5
    vertical_flip_prob: float = 0.0
    affine_prob: float = 0.5
    rotate_deg: float = 10.0
    noise_prob: float = 0.0
    mean: float = 0.5
    std: float = 0.25
    probe_split: str = "test"
    probe_max_train: Optional[int] = None
    probe_max_test: Optional[int] = None
    folder_test_fraction: float = 0.2
    probe: Dict[str, Any] = field(default_factory=dict)


SOURCES = ("digits", "npz", "folder")


def load_split(dcfg: VisionDataConfig, split: str, seed: int = 0) -> ImageArray:
    """One split of the configured source, shuffled with ``shuffle_seed``."""
    if dcfg.source == "digits":
        data = DATASETS.get("images_digits")(split=split, seed=seed)
    elif dcfg.source == "npz":
        if not dcfg.path:
            raise ValueError("data.path must name a MedMNIST .npz file when data.source is 'npz'")
        data = DATASETS.get("images_npz")(dcfg.path, split=split)
    elif dcfg.source == "folder":
        if not dcfg.path:
            raise ValueError("data.path must name an image folder when data.source is 'folder'")
        data = DATASETS.get("images_folder")(dcfg.path, size=dcfg.img_size, channels=dcfg.channels, split=split,
                                             test_fraction=dcfg.folder_test_fraction, seed=seed)
    else:
        raise ValueError(f"data.source must be one of {SOURCES}, got {dcfg.source!r}")
    return data.shuffled(dcfg.shuffle_seed)


def npz_channels(path: str) -> int:
    """Channels of a MedMNIST ``.npz``'s ``train_images`` (``(N,H,W)``: 1) without converting the images."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        if "train_images" not in data.files:
            raise ConfigError(f"{path}: no train_images array (found {sorted(data.files)})")
        shape = data["train_images"].shape
    if len(shape) == 3:
        return 1
    return int(shape[-1] if shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4) else shape[1])


class CorruptingCollate:
    """Wraps a multi-crop collator and adds SiT's GMML corruption of the global views (CPU workers)."""

    def __init__(self, base: Callable[[Sequence[Any]], Dict[str, Any]], corruptor: GroupMaskCorruptor) -> None:
        self.base, self.corruptor = base, corruptor

    def __call__(self, items: Sequence[Any]) -> Dict[str, Any]:
        batch = self.base(items)
        pairs = [self.corruptor(v) for v in batch["views"][: batch["n_global"]]]
        batch["corrupted"] = [c for c, _ in pairs]
        batch["corrupt_mask"] = [m for _, m in pairs]
        return batch


def _identity(image: torch.Tensor) -> torch.Tensor:
    return image


def collate_eval(items: Sequence[Tuple[torch.Tensor, int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items], dtype=torch.int64)


@MODALITIES.register("vision")
class VisionModality(Modality):
    """Images -> multi-crop views (+ GMML corruption for SiT); probes on labelled splits."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.dcfg = from_dict(VisionDataConfig, cfg.data, path="data")
        d = self.dcfg
        if d.augment not in ("batched", "monai"):
            raise ValueError(f"data.augment must be 'batched' or 'monai', got {d.augment!r}")
        if d.channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {d.channels}")
        patch = int(cfg.encoder.get("patch_size", 16))
        if d.img_size % patch:
            raise ValueError(f"data.img_size={d.img_size} is not a multiple of encoder.patch_size={patch}")
        enc_size = cfg.encoder.get("img_size")
        if enc_size is not None and int(enc_size) != d.img_size:
            raise ValueError(f"encoder.img_size={enc_size} differs from data.img_size={d.img_size}")
        self.patch = patch
        self.local_size = d.local_size or max(patch, (d.img_size // 2) // patch * patch)

    def _views(self) -> Tuple[Callable[[torch.Tensor], Any], Callable[[Sequence[Any]], Dict[str, Any]]]:
        d = self.dcfg
        kw = dict(n_global=d.n_global, n_local=d.n_local, local_size=self.local_size,
                  global_scale=tuple(d.global_scale), local_scale=tuple(d.local_scale),
                  normalize=Normalize(d.mean, d.std), flip_prob=d.flip_prob,
                  vertical_flip_prob=d.vertical_flip_prob, affine_prob=d.affine_prob, rotate_deg=d.rotate_deg,
                  noise_prob=d.noise_prob)
        if d.augment == "monai":
            views = MultiCropViews(d.img_size, d.channels, **kw)
            return views, functools.partial(collate_views, n_global=d.n_global)
        return _identity, BatchedMultiCrop(d.img_size, d.channels, **kw)

    def pretrain_data(self) -> Tuple[Dataset, Optional[Callable[[Sequence[Any]], Any]]]:
        data = load_split(self.dcfg, "train", self.cfg.seed).head(self.dcfg.max_items)
        transform, collate = self._views()
        if self.cfg.objective.get("name") == "sit":
            o = self.cfg.objective
            corruptor = GroupMaskCorruptor(self.patch, tuple(o.get("corrupt_ratio", (0.5, 0.7))),
                                           o.get("noise_prob", 0.5), o.get("max_block_frac", 0.3))
            collate = CorruptingCollate(collate, corruptor)
        return ImageDataset(data, transform), collate

    def check_probe_compatible(self) -> None:
        merged = self.probe_data_config()
        if merged is None:
            return
        d, t = self.dcfg, from_dict(VisionDataConfig, merged, path="data.probe")
        here = f"pretraining data ({d.source}{' ' + d.path if d.path else ''})"
        there = f"probe data ({t.source}{' ' + t.path if t.path else ''})"
        if (t.img_size, t.channels) != (d.img_size, d.channels):
            raise ConfigError(f"data.probe: the {there} asks for {t.channels}x{t.img_size}x{t.img_size} images, the "
                              f"encoder takes {d.channels}x{d.img_size}x{d.img_size} ({here}); leave "
                              "data.probe.img_size/channels unset and probe images are resized to the encoder's")
        if t.source in ("npz", "folder"):
            from pathlib import Path

            if not t.path or not Path(t.path).exists():
                raise ConfigError(f"data.probe.path: {t.path or '(unset)'} not found ({there})")
        if t.source == "npz" and d.channels == 1:
            native = npz_channels(t.path)
            if native != 1:
                raise ConfigError(f"data.probe: the {there} holds {native}-channel (RGB) images but the encoder "
                                  f"takes 1 channel ({here}, data.channels=1); averaging would discard colour: "
                                  "pretrain with data.channels=3 or probe grayscale images")
        self.probe_twin()

    def probe_tasks(self) -> List[ProbeTask]:
        twin = self.probe_twin()
        if twin is not None:
            return twin.probe_tasks()
        d = self.dcfg
        test_split = d.probe_split if d.source == "npz" else "test"
        train = load_split(d, "train", self.cfg.seed).head(d.probe_max_train)
        test = load_split(d, test_split, self.cfg.seed).head(d.probe_max_test)
        if (train.labels < 0).any():
            raise ValueError(f"{train.source}: images without class subfolders cannot be probed")
        tf = EvalTransform(d.img_size, d.channels, Normalize(d.mean, d.std))
        name = {"digits": "digits", "npz": "medmnist", "folder": "folder"}[d.source]
        return [ProbeTask(name, "multiclass", ImageDataset(train, tf), ImageDataset(test, tf), collate_eval,
                          train.class_names or None)]

    # ------------------------------------------------------------------ encoder artifact (issue 14)
    def input_pipeline(self) -> Dict[str, Any]:
        """Image size and channels, intensity scaling and normalisation, the training images' size, the
        evaluation transforms and the pooling (what ``EvalTransform`` + ``encoder.pool`` do in the probe)."""
        d = self.dcfg
        source_size = None
        if d.source != "folder":  # folder images are resized by PIL at load time, whatever their size
            source_size = list(load_split(d, "train", self.cfg.seed).images.shape[-2:])
        pool = self.cfg.encoder.get("global_pool", "token")
        return {"kind": "vision", "img_size": d.img_size, "channels": d.channels, "mean": d.mean, "std": d.std,
                "source": d.source, "source_size": source_size,
                "file_resize": "pil_bilinear" if d.source == "folder" else None,
                "eval_transforms": [f"resize to {d.img_size}x{d.img_size} (bilinear, antialias) unless already",
                                    f"channels -> {d.channels} (gray repeated / RGB averaged)",
                                    f"(x - {d.mean}) / {d.std}"],
                "pooling": f"timm pool ({'cls token' if pool == 'token' else pool}) + fc_norm"}


# ----------------------------------------------------------------------------- elastic size probes


def _param_count(encoder: Any) -> int:
    return sum(p.numel() for n, p in encoder.model.named_parameters())


def probe_sizes(run: Any, sizes: Optional[List[Tuple[int, int]]] = None, cfg: Any = None,
                progress: Optional[bool] = None, out_dir: Any = None) -> Dict[str, Any]:
    """kNN + linear probe of every (width, depth) sub-network of an elastic run, each beside the same
    sub-network of the random-init model the run started from; one table, one plot (score vs params).

    Writes ``probe_sizes.json``, ``probe_sizes.md`` and ``probe_sizes.png`` into ``out_dir`` (the run).
    """
    import json
    from pathlib import Path

    from sslab.commands.extract import load_elastic
    from sslab.core.config import load_experiment
    from sslab.core.export import build_encoder
    from sslab.core.io import atomic_write_text
    from sslab.core.modality import build_modality
    from sslab.eval.probe import format_table
    from sslab.run import probe_encoders, seed_everything

    run = Path(run)
    cfg = cfg if cfg is not None else load_experiment(run / "config.yaml")
    encoder = load_elastic(run)
    seed_everything(cfg.seed)  # the same init the pretraining run started from
    random_full = build_encoder(encoder.sslab_spec)
    if not sizes:
        from sslab.commands.extract import trained_sizes

        sizes = trained_sizes(run, encoder)  # only what the run trained
    sizes = sorted({encoder.check_size(w, d) for w, d in sizes}, key=lambda s: encoder.relative_cost(*s))
    encoders, info = {}, {}
    for w, d in sizes:
        tag = f"w{w}_d{d}"
        for init, source in (("pretrained", encoder), ("random_init", random_full)):
            name = f"{tag}/{init}"
            encoders[name] = source.extract_encoder(w, d)
            info[name] = {"width": w, "depth": d, "init": init, "num_params": _param_count(encoders[name])}
    rows = probe_encoders(build_modality(cfg), encoders, cfg, progress=progress)
    for row in rows:
        row.update(info[row["encoder"]])
    out = Path(out_dir) if out_dir is not None else (run if run.is_dir() else run.parent)
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(rows)
    atomic_write_text(out / "probe_sizes.json", json.dumps({"run": str(run), "rows": rows}, indent=2))
    atomic_write_text(out / "probe_sizes.md", table + "\n")
    png = plot_size_probe(rows, out / "probe_sizes.png")
    return {"rows": rows, "table": table, "json": out / "probe_sizes.json", "png": png}


def plot_size_probe(rows: List[Dict[str, Any]], out_png: Any) -> Any:
    """Probe accuracy (linear and kNN) against parameter count, pretrained vs random init."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's (e.g. notebook) backend alone

    rows = [r for r in rows if r.get("label_fraction", 1.0) == 1.0]
    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, metric in zip(axes, ("accuracy", "knn_accuracy")):
        for init, style in (("pretrained", "o-"), ("random_init", "s--")):
            pts = sorted((r["num_params"], r[metric], f"w{r['width']}d{r['depth']}") for r in rows
                         if r["init"] == init and metric in r)
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=init)
            for x, y, label in pts:
                ax.annotate(label, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("parameters of the extracted ViT")
        ax.set_title("linear probe" if metric == "accuracy" else "kNN")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    return out_png
