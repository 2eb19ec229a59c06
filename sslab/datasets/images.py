"""Image sources: image folders, MedMNIST ``.npz`` and scikit-learn digits (the embedded default).

Every source is loaded into one float tensor ``[N, C, H, W]`` in ``[0, 1]`` plus integer labels
(``-1`` when a folder has no class subfolders). Images are small in this project's use (MedMNIST 28 px,
digits 8 px, a few thousand images), so holding them in memory is the simple and fast choice.
Sources are registered in ``DATASETS`` as ``images_<kind>``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sslab.core.registry import DATASETS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
SPLITS = ("train", "val", "test")


@dataclass
class ImageArray:
    """In-memory images ``[N, C, H, W]`` float32 in [0, 1], labels ``[N]`` int64, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: List[str] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"{self.source}: images must be [N, C, H, W], got {tuple(self.images.shape)}")
        if len(self.images) == 0:
            raise ValueError(f"{self.source}: no images")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{self.source}: {len(self.images)} images but {len(self.labels)} labels")
        bad = (~torch.isfinite(self.images)).flatten(1).any(1).nonzero().flatten()
        if len(bad):
            raise ValueError(f"{self.source}: image(s) {bad[:10].tolist()} contain NaN/inf values")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: torch.Tensor) -> "ImageArray":
        return ImageArray(self.images[index], self.labels[index], self.class_names, self.source)

    def shuffled(self, seed: int) -> "ImageArray":
        """Seeded permutation (MedMNIST subsets are stored ordered by class)."""
        g = torch.Generator().manual_seed(seed)
        return self.subset(torch.randperm(len(self), generator=g))

    def head(self, n: Optional[int]) -> "ImageArray":
        return self if n is None or n >= len(self) else self.subset(torch.arange(n))


def _to_nchw(array: np.ndarray, source: str) -> torch.Tensor:
    """uint8/float ``(N,H,W)``, ``(N,H,W,C)`` or ``(N,C,H,W)`` -> float ``[N,C,H,W]`` in [0,1]."""
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3, 4) and array.shape[1] not in (1, 3, 4):
        array = array.transpose(0, 3, 1, 2)
    elif array.ndim != 4:
        raise ValueError(f"{source}: expected images (N,H,W) or (N,H,W,C), got shape {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if array.dtype == np.uint8:
        return tensor.float() / 255.0
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{source}: images contain NaN/inf values")
    lo, hi = float(tensor.min()), float(tensor.max())
    if lo < 0.0 or hi > 1.0:  # float data in another range: min-max scale the whole array
        tensor = (tensor - lo) / max(hi - lo, 1e-8)
    return tensor


@DATASETS.register("images_npz")
def load_medmnist_npz(path: str, split: str = "train") -> ImageArray:
    """MedMNIST ``.npz`` (Yang et al. 2023): keys ``{split}_images`` (N,H,W[,C]) and ``{split}_labels``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"MedMNIST npz not found: {p}")
    if split not in SPLITS:
        raise ValueError(f"{p}: split must be one of {SPLITS}, got {split!r}")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as err:  # zipfile.BadZipFile, ValueError, OSError
        raise ValueError(f"{p}: not a readable .npz file ({err})") from err
    with data:
        keys = set(data.files)
        want = (f"{split}_images", f"{split}_labels")
        missing = [k for k in want if k not in keys]
        if missing:
            raise ValueError(f"{p}: missing arrays {missing}; found {sorted(keys)}")
        images, labels = data[want[0]], data[want[1]]
    labels = np.asarray(labels).reshape(len(labels), -1)
    if labels.shape[1] != 1:
        raise ValueError(f"{p}: {want[1]} has {labels.shape[1]} columns; only single-label MedMNIST is supported")
    if len(labels) != len(images):
        raise ValueError(f"{p}: {len(images)} {split} images but {len(labels)} labels")
    labels_t = torch.from_numpy(labels[:, 0].astype(np.int64))
    n_classes = int(labels_t.max()) + 1
    return ImageArray(_to_nchw(images, f"{p}[{split}]"), labels_t, [str(i) for i in range(n_classes)],
                      f"{p}[{split}]")


@DATASETS.register("images_digits")
def load_digits(split: str = "train", test_fraction: float = 0.25, seed: int = 0) -> ImageArray:
    """scikit-learn digits (1,797 8x8 grayscale, embedded, no download); stratified seeded split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    if split not in SPLITS:
        raise ValueError(f"digits: split must be one of {SPLITS}, got {split!r}")
    d = sk_digits()
    idx_train, idx_test = train_test_split(np.arange(len(d.target)), test_size=test_fraction,
                                           random_state=seed, stratify=d.target)
    idx = idx_train if split == "train" else idx_test  # val == test for the embedded default
    images = torch.from_numpy(d.images[idx].astype(np.float32) / 16.0)[:, None]
    return ImageArray(images, torch.from_numpy(d.target[idx].astype(np.int64)),
                      [str(i) for i in range(10)], f"sklearn digits[{split}]")


@DATASETS.register("images_folder")
def load_image_folder(path: str, size: int, channels: int = 1, split: str = "train",
                      test_fraction: float = 0.2, seed: int = 0) -> ImageArray:
    """Folder of images, optionally in class subfolders (``root/<class>/*.png``; else labels = -1).

    Images are converted to ``L`` or ``RGB`` and resized to ``size`` x ``size``. The split is a seeded
    per-class holdout. An unreadable file raises naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir())
    files: List[Tuple[Path, int]] = []
    if subdirs:
        for label, d in enumerate(subdirs):
            files += [(f, label) for f in sorted(d.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
        class_names = [d.name for d in subdirs]
    else:
        files = [(f, -1) for f in sorted(root.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        class_names = []
    if not files:
        raise ValueError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im = im.convert(mode).resize((size, size), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{f}: cannot read image ({err})") from err
        arrays.append(arr if arr.ndim == 3 else arr[..., None])
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    labels = torch.tensor([lab for _, lab in files], dtype=torch.int64)
    data = ImageArray(images, labels, class_names, str(root))
    if split not in SPLITS:
        raise ValueError(f"{root}: split must be one of {SPLITS}, got {split!r}")
    g = torch.Generator().manual_seed(seed)
    test_idx = []
    for lab in labels.unique():
        members = (labels == lab).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        test_idx.append(members[: int(round(len(members) * test_fraction))])
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[torch.cat(test_idx)] = True
    return data.subset((is_test if split != "train" else ~is_test).nonzero().flatten())


# ----------------------------------------------------------------------------- transforms


def resize_channels(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """``[..., C, H, W]`` -> ``[..., channels, size, size]`` (gray->RGB repeats, RGB->gray averages)."""
    if images.shape[-3] != channels:
        if images.shape[-3] == 1:
            images = images.expand(*images.shape[:-3], channels, *images.shape[-2:])
        elif channels == 1:
            images = images.mean(dim=-3, keepdim=True)
        else:
            raise ValueError(f"cannot map {images.shape[-3]} channels to {channels}")
    if tuple(images.shape[-2:]) != (size, size):
        flat = images.reshape(-1, *images.shape[-3:])
        flat = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        images = flat.reshape(*images.shape[:-2], size, size)
    return images


@dataclass
class Normalize:
    mean: float = 0.5
    std: float = 0.25

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MonaiAugment:
    """Medical-image augmentation with MONAI (Cardoso et al. 2022): intensity scaling, random scaled
    crop resized to ``size`` (RandomResizedCrop analogue), flips, random affine, Gaussian noise.

    MONAI transforms keep their own RandomState; it is reseeded from torch's global RNG on each call
    so the trainer's per-sample seeding makes crops reproducible across workers and resume.
    """

    def __init__(self, size: int, scale: Tuple[float, float] = (0.4, 1.0), flip_prob: float = 0.5,
                 vertical_flip_prob: float = 0.0, affine_prob: float = 0.5, rotate_deg: float = 10.0,
                 noise_prob: float = 0.0, noise_std: float = 0.05) -> None:
        import monai.transforms as T

        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {scale}")
        side = (scale[0] ** 0.5, scale[1] ** 0.5)  # area fraction -> side fraction
        self.size = size
        self.pipeline = T.Compose([
            T.ScaleIntensity(minv=0.0, maxv=1.0),
            T.RandScaleCrop(roi_scale=side[0], max_roi_scale=side[1], random_size=True),
            T.Resize((size, size), mode="bilinear", align_corners=False),
            T.RandFlip(prob=flip_prob, spatial_axis=1),
            T.RandFlip(prob=vertical_flip_prob, spatial_axis=0),
            T.RandAffine(prob=affine_prob, rotate_range=np.deg2rad(rotate_deg), scale_range=0.1,
                         translate_range=0.05 * size, padding_mode="border"),
            T.RandGaussianNoise(prob=noise_prob, std=noise_std),
        ])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        self.pipeline.set_random_state(seed=int(torch.randint(0, 2**31 - 1, (1,))))
        out = self.pipeline(image)
        out = out.as_tensor() if hasattr(out, "as_tensor") else torch.as_tensor(out)
        return out.float().clamp_(0.0, 1.0)


class MultiCropViews:
    """DINO multi-crop (Caron et al. 2021, Sec. 3.1): ``n_global`` large crops at ``size`` and
    ``n_local`` small crops at ``local_size`` from one image; all normalised to ``channels``."""

    def __init__(self, size: int, channels: int, n_global: int = 2, n_local: int = 0,
                 local_size: Optional[int] = None, global_scale: Tuple[float, float] = (0.4, 1.0),
                 local_scale: Tuple[float, float] = (0.05, 0.4), normalize: Optional[Normalize] = None,
                 **augment_kwargs: float) -> None:
        if n_global < 1:
            raise ValueError(f"multi-crop needs at least one global view, got n_global={n_global}")
        self.size, self.channels, self.n_global, self.n_local = size, channels, n_global, n_local
        self.local_size = local_size or size
        self.global_aug = MonaiAugment(size, global_scale, **augment_kwargs)
        self.local_aug = MonaiAugment(self.local_size, local_scale, **augment_kwargs) if n_local else None
        self.normalize = normalize or Normalize()

    def __call__(self, image: torch.Tensor) -> List[torch.Tensor]:
        views = [self.global_aug(image) for _ in range(self.n_global)]
        if self.local_aug is not None:
            views += [self.local_aug(image) for _ in range(self.n_local)]
        return [self.normalize(resize_channels(v, v.shape[-1], self.channels)) for v in views]


class EvalTransform:
    """Deterministic: resize to ``size``, map channels, normalise."""

    def __init__(self, size: int, channels: int, normalize: Optional[Normalize] = None) -> None:
        self.size, self.channels, self.normalize = size, channels, normalize or Normalize()

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.normalize(resize_channels(image, self.size, self.channels))


# ----------------------------------------------------------------------------- datasets


class ImageDataset(Dataset):
    """``(transform(image), label)`` items from an :class:`ImageArray`."""

    def __init__(self, data: ImageArray, transform: Callable[[torch.Tensor], object]) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.transform(self.data.images[i]), int(self.data.labels[i])


def collate_views(items: Sequence[Tuple[List[torch.Tensor], int]], n_global: int = 2) -> dict:
    """Multi-crop items -> ``{"views": [tensor [B,C,h,w] per view], "n_global": G, "label": [B]}``."""
    n_views = len(items[0][0])
    views = [torch.stack([it[0][v] for it in items]) for v in range(n_views)]
    return {"views": views, "n_global": min(n_global, n_views),
            "label": torch.tensor([it[1] for it in items], dtype=torch.int64)}


def random_resized_affine(images: torch.Tensor, size: int, scale: Tuple[float, float],
                          ratio: Tuple[float, float] = (3 / 4, 4 / 3), flip_prob: float = 0.5,
                          vertical_flip_prob: float = 0.0, affine_prob: float = 0.5,
                          rotate_deg: float = 10.0) -> torch.Tensor:
    """Batched RandomResizedCrop + flips + rotation as ONE ``affine_grid``/``grid_sample`` per batch.

    ``images [B,C,H,W]`` -> ``[B,C,size,size]``. Crop area ~ U(scale), aspect ~ logU(ratio), centre
    uniform inside the image, rotation ~ U(+-rotate_deg) with probability ``affine_prob``. Uses
    torch's global RNG (seeded per batch by the trainer).
    """
    B = images.shape[0]
    area = torch.empty(B).uniform_(*scale)
    log_r = torch.empty(B).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    cw = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)
    ch = (area / cw).clamp(max=1.0)  # keep the sampled area when one side hits the border
    cw = (area / ch).clamp(max=1.0)
    cx = (torch.rand(B) * 2 - 1) * (1 - cw)
    cy = (torch.rand(B) * 2 - 1) * (1 - ch)
    fx = torch.where(torch.rand(B) < flip_prob, -1.0, 1.0)
    fy = torch.where(torch.rand(B) < vertical_flip_prob, -1.0, 1.0)
    angle = torch.empty(B).uniform_(-rotate_deg, rotate_deg) * math.pi / 180
    angle = torch.where(torch.rand(B) < affine_prob, angle, torch.zeros(B))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cw * fx * cos, -ch * fy * sin, cx], -1),
                         torch.stack([cw * fx * sin, ch * fy * cos, cy], -1)], 1).to(images)
    grid = F.affine_grid(theta, [B, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def scale_intensity(images: torch.Tensor) -> torch.Tensor:
    """Per-image min-max scaling to [0, 1] (MONAI ``ScaleIntensity`` on a batch)."""
    flat = images.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    shape = (-1,) + (1,) * (images.ndim - 1)
    return (images - lo.view(shape)) / (hi - lo).clamp_min(1e-8).view(shape)


class BatchedMultiCrop:
    """Collator: raw ``(image [C,H,W], label)`` items -> multi-crop views made batch-wise.

    Same view families as :class:`MultiCropViews` (intensity scaling, resized crop, flips, rotation,
    optional Gaussian noise) but one ``grid_sample`` per view for the whole batch, ~100x cheaper than
    per-sample MONAI calls on tiny images (see docs/vision.md).
    """

    def __init__(self, size: int, channels: int, n_global: int = 2, n_local: int = 0,
                 local_size: Optional[int] = None, global_scale: Tuple[float, float] = (0.4, 1.0),
                 local_scale: Tuple[float, float] = (0.05, 0.4), normalize: Optional[Normalize] = None,
                 flip_prob: float = 0.5, vertical_flip_prob: float = 0.0, affine_prob: float = 0.5,
                 rotate_deg: float = 10.0, noise_prob: float = 0.0, noise_std: float = 0.05) -> None:
        if n_global < 1:
            raise ValueError(f"multi-crop needs at least one global view, got n_global={n_global}")
        self.size, self.channels, self.n_global, self.n_local = size, channels, n_global, n_local
        self.local_size = local_size or size
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)
        self.normalize = normalize or Normalize()
        self.aug = dict(flip_prob=flip_prob, vertical_flip_prob=vertical_flip_prob, affine_prob=affine_prob,
                        rotate_deg=rotate_deg)
        self.noise_prob, self.noise_std = noise_prob, noise_std

    def views(self, images: torch.Tensor) -> List[torch.Tensor]:
        images = scale_intensity(images.float())
        plan = [(self.size, self.global_scale)] * self.n_global + [(self.local_size, self.local_scale)] * self.n_local
        out = []
        for size, scale in plan:
            v = random_resized_affine(images, size, scale, **self.aug)
            if self.noise_prob > 0:
                hit = (torch.rand(v.shape[0]) < self.noise_prob).to(v).view(-1, 1, 1, 1)
                v = (v + hit * self.noise_std * torch.randn_like(v)).clamp(0.0, 1.0)
            out.append(self.normalize(resize_channels(v, size, self.channels)))
        return out

    def __call__(self, items: Sequence[Tuple[torch.Tensor, int]]) -> dict:
        images = torch.stack([it[0] for it in items])
        return {"views": self.views(images), "n_global": self.n_global,
                "label": torch.tensor([it[1] for it in items], dtype=torch.int64)}
