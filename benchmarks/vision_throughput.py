"""CPU throughput of the vision pieces (prints numbers; not a test).

    OMP_NUM_THREADS=1 python benchmarks/vision_throughput.py

1. Elastic ViT forward at full size vs the plain timm forward (same weights): images/s and ratio.
2. Elastic forward at each sub-size vs the extracted plain timm model of that size.
3. Multi-crop augmentation: per-sample MONAI pipeline vs the batched grid_sample collator.
"""
from __future__ import annotations

import time

import torch

torch.set_num_threads(1)


def rate(fn, n_images: int, repeats: int = 5) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return n_images * repeats / (time.perf_counter() - t)


def main() -> None:
    from sslab.core.export import build_encoder
    from sslab.datasets.images import BatchedMultiCrop, MultiCropViews, load_digits

    enc = build_encoder({"name": "elastic_vit", "img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 96,
                         "depth": 6, "num_heads": 4, "mlp_ratio": 2.0}).eval()
    x = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        r_plain = rate(lambda: enc.model.forward_features(x), 64)
        r_el = rate(lambda: enc(x), 64)
        print(f"full size (96 wide, 6 deep, 28 px, patch 4): timm {r_plain:.0f} img/s, elastic {r_el:.0f} img/s, "
              f"ratio elastic/timm {r_el / r_plain:.2f}")
        for w, d in [(24, 2), (48, 3), (72, 4), (96, 6)]:
            sub = enc.extract(w, d)
            r_e = rate(lambda: enc(x, width=w, depth=d), 64)
            r_s = rate(lambda: sub.forward_features(x), 64)
            print(f"  w{w:3d} d{d}: elastic {r_e:7.0f} img/s | extracted timm {r_s:7.0f} img/s | ratio {r_e / r_s:.2f}")
    digits = load_digits("train")
    items = [(digits.images[i], 0) for i in range(64)]
    kw = dict(n_global=2, n_local=2, local_size=8)
    monai = MultiCropViews(16, 1, **kw)
    batched = BatchedMultiCrop(16, 1, **kw)
    r_m = rate(lambda: [monai(im) for im, _ in items], 64, 2)
    r_b = rate(lambda: batched(items), 64, 5)
    print(f"multi-crop (2x16 px + 2x8 px): MONAI per-sample {r_m:.0f} img/s, batched {r_b:.0f} img/s, "
          f"speed-up {r_b / r_m:.0f}x")


if __name__ == "__main__":
    main()
