"""The Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words: Transformers for
Image Recognition at Scale") from `attnkit.nn`.

An image is cut into non-overlapping P x P patches; each patch, flattened and linearly projected,
is one token. A learned class token is prepended (or the patch states are mean-pooled), learned
positions are added, a pre-norm Transformer encoder runs over the sequence, and a linear head reads
the class token. Positions are interpolated (bicubic, as timm does) when the image size changes.
The pieces, in reading order:

    patch embedding (`patch_embed`: a torch `nn.Conv2d` with stride = kernel = P, or `ConvStem`)
    -> positions (a learned table `pos`, resampled by `positions`; class token and its position),
       `attnkit.nn.Dropout`
    -> blocks (`attnkit.nn.Encoder`: pre-norm `EncoderLayer`s of `MultiHeadAttention` and
       `FeedForward`, bidirectional)
    -> norm (the `Encoder`'s final norm)
    -> pooling (class token or mean) -> head (a linear layer, zero-initialised).

The patch projection can be replaced by a convolutional stem (Xiao et al. 2021, "Early Convolutions
Help Transformers See Better"): stride-2 3 x 3 convolutions, each followed by BatchNorm and ReLU,
until the image is down to the same P x P-per-token grid, then a 1 x 1 convolution to d_model. The
tokens, positions and encoder are unchanged; the stem gives the model local features that a linear
patch projection must learn from scratch, and trains faster and more stably per the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.nn import Encoder
from attnkit.nn.config import DictConfig
from attnkit.nn.dropout import Dropout


@dataclass(frozen=True, kw_only=True)
class ViTConfig(DictConfig):
    """Sizes and choices of a ViT.

    Fields:
        image_size: (square) side of the training images, in pixels.
        patch_size: side P of a patch; image_size must be a multiple of it.
        in_channels: 1 (grayscale) or 3 (RGB).
        n_classes: classes C.
        d_model, n_heads, n_layers, d_ff: sizes.
        dropout: on embeddings and sub-layer outputs.
        pooling: "cls" (the paper) or "mean" over patch states.
        stem: "patch" (the paper: one linear map per patch) or "conv" (log2 P stride-2 3 x 3
            convolutions with BatchNorm and ReLU, then a 1 x 1 convolution; P must be a power of 2).
        eps: the layer norms' epsilon (1e-12 in Google's and Hugging Face's ViT checkpoints).
        stem_depth: with the conv stem, how many scales, from full resolution down, also get a
            stride-1 3 x 3 convolution (with BatchNorm and ReLU); 0 = none (Xiao et al.'s stem).
    """

    image_size: int
    patch_size: int = 4
    in_channels: int = 1
    n_classes: int = 10
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 6
    d_ff: int = 256
    dropout: float = 0.1
    pooling: Literal["cls", "mean"] = "cls"
    stem: Literal["patch", "conv"] = "patch"
    stem_depth: int = 0
    eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "in_channels", "d_model", "n_heads", "n_layers", "d_ff"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be cls or mean, got {self.pooling!r}")
        if self.stem not in ("patch", "conv"):
            raise ValueError(f"stem must be patch or conv, got {self.stem!r}")
        if self.stem == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ValueError(
                f"a conv stem halves the image per convolution: patch_size must be 2, 4, 8, ...; got {self.patch_size}"
            )
        scales = self.patch_size.bit_length()  # full resolution, then one per halving
        if self.stem_depth and (self.stem != "conv" or not 0 <= self.stem_depth <= scales):
            raise ValueError(
                f"stem_depth needs stem conv and must be in 0..{scales} (scales of the stem), got {self.stem_depth}"
            )

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size


class ViT(nn.Module):
    """images (B, C, H, W), normalised -> class logits (B, n_classes).

    Args:
        config: ViTConfig (C = in_channels, D = d_model; H and W multiples of patch_size).
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        if config.stem == "conv":
            self.patch_embed = ConvStem(config.in_channels, d, config.patch_size, config.stem_depth)
        else:
            # A convolution with stride = kernel = P is exactly a linear map of each flattened patch.
            self.patch_embed = nn.Conv2d(config.in_channels, d, kernel_size=config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if config.pooling == "cls" else None
        self.pos = nn.Parameter(torch.randn(1, config.grid * config.grid, d) * 0.02)  # patch positions
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, d)) if config.pooling == "cls" else None
        self.dropout = Dropout(config.dropout)
        self.encoder = Encoder(
            d,
            config.n_heads,
            config.d_ff,
            config.n_layers,
            dropout=config.dropout,
            activation="gelu",
            norm_first=True,
            eps=config.eps,
            final_norm=True,
        )
        self.head = nn.Linear(d, config.n_classes)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def positions(self, grid_h: int, grid_w: int) -> Tensor:
        """Patch positions (1, grid_h * grid_w, D), resampled bicubically from the trained grid if it differs."""
        g = self.config.grid
        if (grid_h, grid_w) == (g, g):
            return self.pos
        table = self.pos.reshape(1, g, g, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
        table = F.interpolate(table, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)

    def forward(self, images: Tensor) -> Tensor:
        """images (B, C, H, W), H and W multiples of the patch size -> logits (B, n_classes)."""
        _, _, height, width = images.shape
        p = self.config.patch_size
        if height % p or width % p:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {p}")
        x = self.patch_embed(images)  # (B, D, H/P, W/P)
        grid_h, grid_w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2) + self.positions(grid_h, grid_w)  # (B, N, D)
        if self.cls_token is not None:
            cls = (self.cls_token + self.cls_pos).expand(x.size(0), -1, -1)  # (B, 1, D)
            x = torch.cat([cls, x], dim=1)  # (B, 1 + N, D)
        x = self.encoder(self.dropout(x))  # (B, 1 + N, D)
        pooled = x[:, 0] if self.cls_token is not None else x.mean(dim=1)  # (B, D)
        return self.head(pooled)


class ConvStem(nn.Sequential):
    """images (B, C, H, W) -> tokens' features (B, D, H/P, W/P) through log2 P stride-2 convolutions.

    Xiao et al. 2021's stem: each 3 x 3, stride-2 convolution (padding 1) halves the image and
    doubles the channels (never fewer than 8), ending at D channels, before a 1 x 1 convolution;
    BatchNorm and ReLU follow each 3 x 3 convolution. So one token still stands for a P x P region.
    Optionally the first `depth` scales, from full resolution down, also get a stride-1 3 x 3
    convolution, so that each downsampling works on features instead of raw pixels or a single layer
    of them (on Fashion-MNIST this pays for its cost; see BENCHMARKS.md). The one at full resolution
    is as wide as the first stride-2 convolution; the others keep their scale's width.

    Args:
        in_channels: image channels C.
        d_model: output channels D.
        patch_size: P, a power of 2 (the number of halvings is log2 P).
        depth: scales with a stride-1 convolution, 0..log2 P + 1.
    """

    def __init__(self, in_channels: int, d_model: int, patch_size: int, depth: int = 0) -> None:
        halvings = patch_size.bit_length() - 1
        down = [max(d_model // 2 ** (halvings - 1 - i), 8) for i in range(halvings)]  # ..., D/2, D
        convs: list[tuple[int, int]] = []  # (width, stride) of each 3 x 3 convolution
        for scale, width in enumerate([down[0], *down]):  # full resolution, then after each halving
            if scale < depth:
                convs.append((width, 1))
            if scale < halvings:
                convs.append((down[scale], 2))
        layers: list[nn.Module] = []
        channels = in_channels
        for width, stride in convs:
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        layers.append(nn.Conv2d(channels, d_model, kernel_size=1))
        super().__init__(*layers)

    def forward(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) -> (B, D, H/P, W/P)."""
        # Channels-last lets the CPU's convolution kernels skip reordering each layer's activations:
        # 5-15% less time per training step with a full-resolution convolution, in paired timings.
        return super().forward(images.contiguous(memory_format=torch.channels_last))
