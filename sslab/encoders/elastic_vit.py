"""Elastic ViT: one set of timm ViT weights run at reduced width and depth, chosen per forward call.

POA (Zhang et al., ECCV 2024, Sec. 3.2 "Elastic student"): a sub-network of width ``w`` uses the first
``w`` channels of every embedding, LayerNorm, attention and MLP weight; the number of attention heads
scales with the width (head dimension fixed, ``heads = w / head_dim``) and the MLP hidden size keeps the
ratio (``mlp_ratio * w``). Depth ``d`` keeps ``d`` evenly spaced blocks of the full stack
(``round(linspace(0, L-1, d))``). Because the sub-network is exactly a smaller timm ViT with sliced
weights, :meth:`ElasticViT.extract` writes it as a standalone timm model that reproduces the elastic
forward.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sslab.core.registry import ENCODERS
from sslab.encoders.vit_timm import TimmViT, create_timm_vit


def _layer_norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a timm norm layer to the first ``x.shape[-1]`` channels (Identity passes through)."""
    if isinstance(module, nn.Identity):
        return x
    if isinstance(module, nn.LayerNorm):
        w = x.shape[-1]
        weight = module.weight[:w] if module.weight is not None else None
        bias = module.bias[:w] if module.bias is not None else None
        return F.layer_norm(x, (w,), weight, bias, module.eps)
    raise TypeError(f"elastic ViT supports LayerNorm/Identity norms, got {type(module).__name__}")


def _layer_scale(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Identity):
        return x
    return x * module.gamma[: x.shape[-1]]


def evenly_spaced_blocks(total: int, depth: int) -> List[int]:
    """Indices of ``depth`` blocks spread evenly over ``total`` (first and last always kept if depth>1)."""
    if not 1 <= depth <= total:
        raise ValueError(f"depth must be in [1, {total}], got {depth}")
    if depth == 1:
        return [total - 1]
    return [int(round(i * (total - 1) / (depth - 1))) for i in range(depth)]


def check_elastic_supported(m: nn.Module) -> None:
    """Raise ``ValueError`` unless timm ViT ``m`` has the structure the elastic forward slices."""
    from timm.layers import Mlp

    if m.num_prefix_tokens != 1 or m.cls_token is None or getattr(m, "no_embed_class", False):
        raise ValueError("elastic_vit needs a class token, no register tokens and pos_embed covering it")
    for i, blk in enumerate(m.blocks):
        if not isinstance(blk.attn.norm, nn.Identity) or getattr(blk.attn, "gate", None) is not None:
            raise ValueError(f"elastic_vit: block {i} uses attention scale-norm/gating (unsupported)")
        if type(blk.mlp) is not Mlp:
            raise ValueError(f"elastic_vit: block {i} has a {type(blk.mlp).__name__} MLP; only timm Mlp is supported")
        for norm in (blk.norm1, blk.norm2):
            if not isinstance(norm, (nn.LayerNorm, nn.Identity)):
                raise ValueError(f"elastic_vit: block {i} uses {type(norm).__name__}; only LayerNorm is supported")


@ENCODERS.register("elastic_vit")
class ElasticViT(TimmViT):
    """timm ViT whose ``forward(x, mask=None, width=None, depth=None)`` runs any sub-size.

    ``width`` must be a multiple of the head dimension; ``depth`` is in ``[1, L]``. ``None`` means full.
    The full-size call computes the same function as the plain timm forward (tested to 1e-5).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        m = self.model
        check_elastic_supported(m)
        self.head_dim: int = m.blocks[0].attn.head_dim
        self.num_heads: int = m.blocks[0].attn.num_heads
        self.mlp_hidden: int = m.blocks[0].mlp.fc1.out_features

    # ------------------------------------------------------------------ sizes
    def check_size(self, width: Optional[int], depth: Optional[int]) -> Tuple[int, int]:
        width = self.dim if width is None else int(width)
        depth = self.depth if depth is None else int(depth)
        if width <= 0 or width > self.dim or width % self.head_dim:
            raise ValueError(f"width must be a multiple of head_dim={self.head_dim} in "
                             f"[{self.head_dim}, {self.dim}], got {width}")
        if (self.mlp_hidden * width) % self.dim:
            raise ValueError(f"width {width} gives a non-integer MLP hidden size "
                             f"({self.mlp_hidden} * {width} / {self.dim})")
        if not 1 <= depth <= self.depth:
            raise ValueError(f"depth must be in [1, {self.depth}], got {depth}")
        return width, depth

    def block_indices(self, depth: Optional[int] = None) -> List[int]:
        return evenly_spaced_blocks(self.depth, self.depth if depth is None else depth)

    def relative_cost(self, width: int, depth: int) -> float:
        """Approximate FLOPs of a sub-network relative to the full model (~ depth * width^2)."""
        return (depth / self.depth) * (width / self.dim) ** 2

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                width: Optional[int] = None, depth: Optional[int] = None) -> torch.Tensor:
        self.check_input(x)
        W, _ = self.check_size(width, depth)
        m = self.model
        proj = m.patch_embed.proj
        tokens = F.conv2d(x, proj.weight[:W], proj.bias[:W] if proj.bias is not None else None,
                          stride=proj.stride, padding=proj.padding)
        grid = tuple(tokens.shape[-2:])
        tokens = tokens.flatten(2).transpose(1, 2)
        tokens = _layer_norm(m.patch_embed.norm, tokens)
        tokens = self._apply_mask(tokens, mask, W)
        pos = m.pos_embed[..., :W]
        if grid != tuple(m.patch_embed.grid_size):
            from timm.layers import resample_abs_pos_embed

            pos = resample_abs_pos_embed(pos, new_size=grid, old_size=m.patch_embed.grid_size,
                                         num_prefix_tokens=1)
        cls = m.cls_token[..., :W].expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + pos
        tokens = m.pos_drop(tokens)
        tokens = m.patch_drop(tokens)
        tokens = _layer_norm(m.norm_pre, tokens)
        for i in self.block_indices(depth):
            tokens = self._block(m.blocks[i], tokens, W)
        return _layer_norm(m.norm, tokens)

    def _block(self, blk: nn.Module, x: torch.Tensor, W: int) -> torch.Tensor:
        """One pre-norm transformer block on the first ``W`` channels (timm ``Block`` semantics)."""
        B, N, _ = x.shape
        D, hd = self.dim, self.head_dim
        attn = blk.attn
        h = _layer_norm(blk.norm1, x)
        w_qkv = attn.qkv.weight.view(3, D, D)[:, :W, :W].reshape(3 * W, W)
        b_qkv = attn.qkv.bias.view(3, D)[:, :W].reshape(3 * W) if attn.qkv.bias is not None else None
        qkv = F.linear(h, w_qkv, b_qkv).reshape(B, N, 3, W // hd, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if self.training else 0.0)
        o = o.transpose(1, 2).reshape(B, N, W)
        o = F.linear(o, attn.proj.weight[:W, :W], attn.proj.bias[:W] if attn.proj.bias is not None else None)
        o = attn.proj_drop(o)
        x = x + blk.drop_path1(_layer_scale(blk.ls1, o))

        mlp = blk.mlp
        Hw = self.mlp_hidden * W // D
        h = _layer_norm(blk.norm2, x)
        h = F.linear(h, mlp.fc1.weight[:Hw, :W], mlp.fc1.bias[:Hw] if mlp.fc1.bias is not None else None)
        h = mlp.drop1(mlp.act(h))
        h = _layer_norm(mlp.norm, h)
        h = F.linear(h, mlp.fc2.weight[:W, :Hw], mlp.fc2.bias[:W] if mlp.fc2.bias is not None else None)
        h = mlp.drop2(h)
        return x + blk.drop_path2(_layer_scale(blk.ls2, h))

    # ------------------------------------------------------------------ extraction
    def sub_timm_config(self, width: int, depth: int) -> Dict[str, Any]:
        width, depth = self.check_size(width, depth)
        args = dict(self.model_args)
        args.update(embed_dim=width, depth=depth, num_heads=width // self.head_dim,
                    mlp_ratio=self.mlp_hidden / self.dim, drop_path_rate=0.0)
        return {"architecture": self.arch, "model_args": args}

    @torch.no_grad()
    def sub_state_dict(self, width: int, depth: int) -> Dict[str, torch.Tensor]:
        """timm ``state_dict`` of the (width, depth) sub-network: sliced, re-indexed, contiguous copies."""
        cfg = self.sub_timm_config(width, depth)
        target = create_timm_vit(cfg["architecture"], cfg["model_args"])
        source = self.model.state_dict()
        blocks = self.block_indices(depth)
        D, W = self.dim, width
        out: Dict[str, torch.Tensor] = {}
        for key, ref in target.state_dict().items():
            src_key = key
            if key.startswith("blocks."):
                _, j, rest = key.split(".", 2)
                src_key = f"blocks.{blocks[int(j)]}.{rest}"
            src = source[src_key]
            if src_key.endswith("attn.qkv.weight"):
                val = src.view(3, D, D)[:, :W, :W].reshape(3 * W, W)
            elif src_key.endswith("attn.qkv.bias"):
                val = src.view(3, D)[:, :W].reshape(3 * W)
            else:
                val = src[tuple(slice(0, s) for s in ref.shape)]
            if val.shape != ref.shape:
                raise RuntimeError(f"cannot slice {src_key} {tuple(src.shape)} to {key} {tuple(ref.shape)}")
            out[key] = val.detach().clone().contiguous()
        return out

    def extract(self, width: int, depth: int) -> nn.Module:
        """A plain timm ``VisionTransformer`` of size (width, depth) carrying the shared weights."""
        cfg = self.sub_timm_config(width, depth)
        model = create_timm_vit(cfg["architecture"], cfg["model_args"])
        model.load_state_dict(self.sub_state_dict(width, depth), strict=True)
        return model.eval()

    def extract_encoder(self, width: int, depth: int) -> TimmViT:
        """The sub-network as an sslab ``vit_timm`` encoder (mask token sliced as well)."""
        cfg = self.sub_timm_config(width, depth)
        args = cfg["model_args"]
        known = {"img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio",
                 "drop_path_rate", "global_pool"}
        extra = {k: v for k, v in args.items() if k not in known | {"num_classes", "dynamic_img_size"}}
        spec = {"arch": self.arch, **{k: args[k] for k in known}, "timm_kwargs": extra}
        enc = TimmViT(**spec)
        enc.model.load_state_dict(self.sub_state_dict(width, depth), strict=True)
        with torch.no_grad():
            enc.mask_token.copy_(self.mask_token[..., :width])
        enc.sslab_spec = {"name": "vit_timm", **spec}
        return enc

    def size_grid(self, widths: Optional[List[int]] = None, depths: Optional[List[int]] = None
                  ) -> List[Tuple[int, int]]:
        """All valid (width, depth) pairs from the given lists (default: 1/4, 1/2, 3/4, full)."""
        if widths is None:
            widths = sorted({self.head_dim * max(1, round(self.num_heads * f)) for f in (0.25, 0.5, 0.75, 1.0)})
        if depths is None:
            depths = sorted({max(1, round(self.depth * f)) for f in (0.25, 0.5, 0.75, 1.0)})
        return [self.check_size(w, d) for w in widths for d in depths]
