"""``vision`` pipeline: intensities to [0, 1] -> resize to ``img_size`` / map to ``channels`` ->
``(x - mean) / std`` -> the encoder's timm pooling (the probe's :class:`~sslab.datasets.images.EvalTransform`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sslab.core.pipeline import InputMismatch, InputPipeline, PathLike, expand_paths
from sslab.core.registry import PIPELINES

NPZ_SPLITS = ("train", "val", "test")


def _stat(value: Any) -> Any:
    """A scalar mean/std, or a per-channel one as a ``[C, 1, 1]`` tensor (imported timm models)."""
    if isinstance(value, (list, tuple)):
        return torch.tensor([float(v) for v in value], dtype=torch.float32).view(-1, 1, 1)
    return float(value)


@PIPELINES.register("vision")
class VisionPipeline(InputPipeline):
    """Spec keys: ``img_size``, ``channels``, ``mean``, ``std``, ``source_size`` ([H, W] of the training
    images, or null when training resized images of any size), ``file_resize`` ("pil_bilinear" when the
    training images were files resized by PIL). Images of another size are refused unless
    ``allow_resize`` is set (``sslab embed --allow-resize``)."""

    usage = 'enc.embed_raw(image)   # [H, W], [H, W, C] or [C, H, W]; uint8 or [0, 1]; or a list'

    allow_resize = False

    def _check_size(self, hw: Tuple[int, int], where: str) -> None:
        want = self.spec.get("source_size")
        if want and tuple(hw) != tuple(want) and not self.allow_resize:
            raise InputMismatch(f"{where}: image size {hw[0]}x{hw[1]}, but the encoder was trained and probed on "
                                f"{want[0]}x{want[1]} images (resized to {self.spec['img_size']}); "
                                "pass --allow-resize (allow_resize=True) to resize anyway")

    def _eval(self, image: torch.Tensor) -> torch.Tensor:
        from sslab.datasets.images import EvalTransform, Normalize

        s = self.spec
        return EvalTransform(int(s["img_size"]), int(s["channels"]), Normalize(_stat(s["mean"]), _stat(s["std"])))(image)

    def _array_items(self, array: np.ndarray, where: str) -> List[torch.Tensor]:
        from sslab.datasets.images import _to_nchw

        images = _to_nchw(np.asarray(array), where)
        self._check_size(tuple(images.shape[-2:]), where)
        return [self._eval(img) for img in images]

    def preprocess(self, raw: Any, **meta: Any) -> List[torch.Tensor]:
        """``raw``: one image ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` (or a list of them), uint8 (divided by
        255) or float in [0, 1] (other float ranges are min-max scaled per image)."""
        images = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        out: List[torch.Tensor] = []
        for k, img in enumerate(images):
            arr = img.numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
            if arr.ndim not in (2, 3):
                raise InputMismatch(f"image input {k}: expected [H, W], [H, W, C] or [C, H, W], got shape {arr.shape}")
            out += self._array_items(arr[None], f"image input {k}")
        return out

    def _read_file(self, path: Path) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        channels = int(self.spec["channels"])
        mode = "L" if channels == 1 else "RGB"
        try:
            with Image.open(path) as im:
                im = im.convert(mode)
                if self.spec.get("file_resize") == "pil_bilinear":
                    size = int(self.spec["img_size"])
                    im = im.resize((size, size), Image.BILINEAR)
                else:
                    self._check_size((im.height, im.width), str(path))
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{path}: cannot read image ({err})") from err
        arr = arr if arr.ndim == 3 else arr[..., None]
        return self._eval(torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0)

    def _read_npz(self, path: Path) -> Iterator[Tuple[str, Any]]:
        with np.load(path, allow_pickle=False) as data:
            keys = [f"{s}_images" for s in NPZ_SPLITS if f"{s}_images" in data.files]
            keys = keys or (["images"] if "images" in data.files else [])
            if not keys:
                raise ValueError(f"{path}: no image arrays (expected train_images/val_images/test_images or images); "
                                 f"found {sorted(data.files)}")
            arrays = {k: data[k] for k in keys}
        for key, arr in arrays.items():
            tag = key[: -len("_images")] if key.endswith("_images") else key
            for i, item in enumerate(self._array_items(arr, f"{path}[{tag}]")):
                yield f"{path}:{tag}[{i}]", item

    def read(self, paths: Sequence[PathLike]) -> Iterator[Tuple[str, Any]]:
        """MedMNIST-style ``.npz`` (every ``<split>_images`` array, rows ``file:split[i]``) and image files /
        folders (recursive; rows = file paths)."""
        from sslab.datasets.images import IMAGE_SUFFIXES

        for path in expand_paths(paths, (".npz", *IMAGE_SUFFIXES)):
            if path.suffix.lower() == ".npz":
                yield from self._read_npz(path)
            else:
                yield str(path), self._read_file(path)

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(items))

    def describe(self) -> List[str]:
        s = self.spec
        src: Optional[List[int]] = s.get("source_size")
        return [f"- input: {s['channels']}-channel images, intensities to [0, 1] (uint8 / 255; other float ranges "
                "min-max scaled over the array)",
                f"- training images were {src[0]}x{src[1]}" if src else "- training images of any size (resized)",
                f"- eval transforms: {', '.join(s.get('eval_transforms', []))}",
                f"- features: {s.get('pooling')}"]
