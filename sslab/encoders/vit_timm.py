"""timm Vision Transformer wrapped in the sslab encoder contract.

The backbone is ``timm.create_model(arch, pretrained=False, ...)`` (never a download), so any image
size, patch size and channel count works by overriding timm's keyword arguments. The wrapper adds a
learnable ``mask_token`` (BEiT/iBOT/SimMIM style) used when ``forward`` receives a patch mask, and
exposes the exact timm ``model_args`` so that weights can be written as a plain timm checkpoint.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from sslab.core.registry import ENCODERS

DEFAULT_ARCH = "vit_tiny_patch16_224"


def timm_model_args(img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
                    embed_dim: Optional[int] = None, depth: Optional[int] = None,
                    num_heads: Optional[int] = None, mlp_ratio: Optional[float] = None,
                    drop_path_rate: float = 0.0, global_pool: str = "token",
                    timm_kwargs: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Keyword arguments for ``timm.create_model``: only what is set overrides the arch defaults."""
    args: Dict[str, Any] = dict(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                num_classes=0, global_pool=global_pool, dynamic_img_size=True,
                                drop_path_rate=drop_path_rate)
    for key, value in (("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads),
                       ("mlp_ratio", mlp_ratio)):
        if value is not None:
            args[key] = value
    args.update(timm_kwargs or {})
    return args


def create_timm_vit(arch: str, model_args: Dict[str, Any]) -> nn.Module:
    """``timm.create_model`` with ``pretrained=False``; errors name the arch and the bad argument."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    try:
        model = timm.create_model(arch, pretrained=False, **model_args)
    except (RuntimeError, TypeError, AssertionError, ValueError) as err:
        raise ValueError(f"timm.create_model({arch!r}, **{model_args}) failed: {err}") from err
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"timm arch {arch!r} is a {type(model).__name__}, expected a VisionTransformer")
    return model


@ENCODERS.register("vit_timm")
class TimmViT(nn.Module):
    """Plain timm ViT. ``forward(images [B,C,H,W], mask [B,N] bool) -> tokens [B, 1+N, D]``.

    ``mask`` (True = hidden) replaces patch embeddings by ``mask_token`` before positional embedding
    (iBOT, Zhou et al. 2022, Sec. 3.2). ``pool`` applies timm's own pooling (``global_pool``: cls token
    or mean of patch tokens) so features match ``model.forward_head(pre_logits=True)``.
    """

    def __init__(self, arch: str = DEFAULT_ARCH, img_size: int = 224, patch_size: int = 16,
                 in_chans: int = 3, embed_dim: Optional[int] = None, depth: Optional[int] = None,
                 num_heads: Optional[int] = None, mlp_ratio: Optional[float] = None,
                 drop_path_rate: float = 0.0, global_pool: str = "token",
                 timm_kwargs: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self.arch = arch
        self.model_args = timm_model_args(img_size, patch_size, in_chans, embed_dim, depth, num_heads,
                                          mlp_ratio, drop_path_rate, global_pool, timm_kwargs)
        self.model = create_timm_vit(arch, self.model_args)
        self.dim: int = self.model.embed_dim
        self.depth: int = len(self.model.blocks)
        self.in_chans: int = in_chans
        self.img_size: int = img_size
        self.patch_size: int = self.model.patch_embed.patch_size[0]
        self.num_prefix_tokens: int = self.model.num_prefix_tokens
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    @property
    def grid_size(self) -> tuple:
        return tuple(self.model.patch_embed.grid_size)

    @property
    def num_patches(self) -> int:
        return int(self.grid_size[0] * self.grid_size[1])

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"vision encoder expects images [B, {self.in_chans}, H, W], got {tuple(x.shape)}")
        if x.shape[-1] % self.patch_size or x.shape[-2] % self.patch_size:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of patch size {self.patch_size}")

    def _apply_mask(self, patches: torch.Tensor, mask: Optional[torch.Tensor], width: int) -> torch.Tensor:
        """``patches`` [B, N, w] or [B, H, W, w]; positions where ``mask`` is True get the mask token."""
        if mask is None:
            return patches
        flat = patches.reshape(patches.shape[0], -1, patches.shape[-1])
        if mask.shape != flat.shape[:2]:
            raise ValueError(f"patch mask must be [B, N]={tuple(flat.shape[:2])}, got {tuple(mask.shape)}")
        token = self.mask_token[..., :width].to(flat.dtype)
        flat = torch.where(mask.to(flat.device).bool()[..., None], token, flat)
        return flat.reshape(patches.shape)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        self.check_input(x)
        m = self.model
        tokens = m.patch_embed(x)
        tokens = self._apply_mask(tokens, mask, self.dim)
        tokens = m._pos_embed(tokens)
        tokens = m.patch_drop(tokens)
        tokens = m.norm_pre(tokens)
        tokens = m.blocks(tokens)
        return m.norm(tokens)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """timm pooling + fc_norm (sliced to the token width, so reduced widths pool the same way)."""
        pooled = self.model.pool(tokens)
        fc_norm = self.model.fc_norm
        if isinstance(fc_norm, nn.LayerNorm):
            w = pooled.shape[-1]
            pooled = nn.functional.layer_norm(pooled, (w,), fc_norm.weight[:w], fc_norm.bias[:w], fc_norm.eps)
        return pooled

    def patch_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.num_prefix_tokens:]

    def timm_config(self) -> Dict[str, Any]:
        """What ``timm.create_model(architecture, pretrained=False, **model_args)`` needs."""
        return {"architecture": self.arch, "model_args": dict(self.model_args)}
