"""Image sources (MedMNIST npz on the shared PneumoniaMNIST, folders, digits), views and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sslab.datasets.images import (BatchedMultiCrop, EvalTransform, ImageArray, MultiCropViews, load_digits,
                                   load_image_folder, load_medmnist_npz, resize_channels)

torch.set_num_threads(1)


def test_shared_pneumoniamnist_npz(shared_data):
    path = shared_data / "images" / "pneumoniamnist_balanced" / "pneumoniamnist.npz"
    train, test = load_medmnist_npz(str(path), "train"), load_medmnist_npz(str(path), "test")
    assert train.images.shape == (2428, 1, 28, 28) and len(test) == 468
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert train.labels.float().mean() == 0.5                 # class-balanced subset
    assert (train.labels[:10] == train.labels[0]).all()      # stored ordered by class ...
    shuffled = train.shuffled(0)
    assert 0.3 < shuffled.head(100).labels.float().mean() < 0.7  # ... so a head() subset needs the shuffle
    assert torch.equal(shuffled.images, train.shuffled(0).images)


def test_npz_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_medmnist_npz(str(tmp_path / "nope.npz"))
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="corrupt.npz: not a readable"):
        load_medmnist_npz(str(tmp_path / "corrupt.npz"))
    np.savez(tmp_path / "partial.npz", train_images=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"missing arrays \['train_labels'\]"):
        load_medmnist_npz(str(tmp_path / "partial.npz"))
    np.savez(tmp_path / "nan.npz", train_images=np.full((3, 8, 8), np.nan, np.float32),
             train_labels=np.zeros((3, 1)))
    with pytest.raises(ValueError, match="NaN"):
        load_medmnist_npz(str(tmp_path / "nan.npz"))
    np.savez(tmp_path / "rgb.npz", train_images=np.zeros((4, 8, 8, 3), np.uint8), train_labels=np.arange(4)[:, None])
    assert load_medmnist_npz(str(tmp_path / "rgb.npz")).images.shape == (4, 3, 8, 8)


def test_image_folder_with_classes_and_corrupt_file(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    train = load_image_folder(str(tmp_path), size=16, channels=3, split="train")
    test = load_image_folder(str(tmp_path), size=16, channels=3, split="test")
    assert train.images.shape == (8, 3, 16, 16) and len(test) == 2 and train.class_names == ["cat", "dog"]
    assert sorted(test.labels.tolist()) == [0, 1]
    assert load_image_folder(str(tmp_path), size=16, channels=1).images.shape[1] == 1
    (tmp_path / "dog" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="broken.png: cannot read image"):
        load_image_folder(str(tmp_path), size=16)
    with pytest.raises(ValueError, match="no image files"):
        (tmp_path / "empty").mkdir()
        load_image_folder(str(tmp_path / "empty"), size=16)


def test_views_monai_and_batched_are_seeded_and_shaped():
    d = load_digits("train")
    assert d.images.shape[1:] == (1, 8, 8) and len(d) + len(load_digits("test")) == 1797
    mc = MultiCropViews(16, 3, n_global=2, n_local=2, local_size=8, affine_prob=1.0)
    torch.manual_seed(1); a = mc(d.images[0])
    torch.manual_seed(1); b = mc(d.images[0])
    torch.manual_seed(2); c = mc(d.images[0])
    assert [tuple(v.shape) for v in a] == [(3, 16, 16)] * 2 + [(3, 8, 8)] * 2
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    coll = BatchedMultiCrop(16, 1, n_global=2, n_local=1, local_size=8)
    items = [(d.images[i], int(d.labels[i])) for i in range(8)]
    torch.manual_seed(0); b1 = coll(items)
    torch.manual_seed(0); b2 = coll(items)
    assert [tuple(v.shape) for v in b1["views"]] == [(8, 1, 16, 16)] * 2 + [(8, 1, 8, 8)]
    assert b1["n_global"] == 2 and torch.equal(b1["views"][0], b2["views"][0])
    assert not torch.equal(b1["views"][0], b1["views"][1])   # two different global crops
    # identity crop (scale 1, no flip/rotation) reproduces the resized image
    ident = BatchedMultiCrop(8, 1, global_scale=(1.0, 1.0), flip_prob=0.0, affine_prob=0.0)
    ident_views = ident.views(torch.stack([it[0] for it in items]))[0]
    ev = EvalTransform(8, 1)
    ref = torch.stack([ev(it[0] / it[0].max()) for it in items])
    assert torch.allclose(ident_views, ref, atol=1e-4)


def test_resize_channels_and_array_checks():
    assert resize_channels(torch.rand(2, 1, 8, 8), 16, 3).shape == (2, 3, 16, 16)
    assert resize_channels(torch.rand(3, 8, 8), 8, 1).shape == (1, 8, 8)
    with pytest.raises(ValueError, match="contain NaN"):
        ImageArray(torch.full((2, 1, 4, 4), float("nan")), torch.zeros(2, dtype=torch.long), source="x")
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        ImageArray(torch.zeros(2, 1, 4, 4), torch.zeros(3, dtype=torch.long), source="x")
