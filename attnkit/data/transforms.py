"""Image transforms on batches of tensors, for training vision models without torchvision: scaling to
[0, 1], per-channel normalisation, random crop with zero padding, horizontal flip, random rotation, and a
light RandAugment
(Cubuk et al., 2020, "RandAugment: Practical automated data augmentation with a reduced search space").

Images are batches `(B, C, H, W)`. Each random transform draws one value per image from the
`torch.Generator` it is given, on the generator's device, so a seed gives the same output whatever device
the images are on. The random transforms expect images in [0, 1]: apply them before `normalize` (then
zero padding and cut-out squares are black, as in torchvision's pipelines).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """U[0, 1) draws of `shape`, made on the generator's device, returned on `like`'s device and dtype."""
    draws = torch.rand(shape, generator=generator, device=_draw_device(generator))
    return draws.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32)


def _check_batch(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} takes a batch (B, C, H, W), got shape {tuple(x.shape)}")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [0, 1] (divided by 255).

    Args:
        images: `(..., C, H, W)` uint8, e.g. `(B, C, H, W)`.

    Returns:
        float32 of the same shape.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"to_float takes uint8 images, got {images.dtype}")
    return images.to(torch.float32).div_(255)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """`(x - mean[c]) / std[c]` for each channel c.

    Args:
        x: `(B, C, H, W)` or `(C, H, W)` float.
        mean, std: C values each (std > 0), e.g. from `attnkit.data.images.channel_stats`.

    Returns:
        float of x's shape.
    """
    channels = x.shape[-3]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"normalize: {len(mean)} means and {len(std)} stds for {channels} channel(s)")
    if any(s <= 0 for s in std):
        raise ValueError(f"normalize: std must be positive, got {list(std)}")
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # (C, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # (C, 1, 1)
    return (x - mean_t) / std_t


def random_crop(
    x: torch.Tensor,
    size: int | tuple[int, int],
    padding: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pad each side with `padding` zeros, then cut an `size` window at a random offset per image.

    Args:
        x: `(B, C, H, W)`, any dtype.
        size: output (h, w), or one int for a square; at most (H + 2 * padding, W + 2 * padding).
        padding: zeros added on every side first.
        generator: the source of the offsets.

    Returns:
        `(B, C, h, w)`, every pixel either a padding zero or a pixel of the same image.
    """
    _check_batch(x, "random_crop")
    h, w = (size, size) if isinstance(size, int) else size
    if padding < 0:
        raise ValueError(f"random_crop: padding must be >= 0, got {padding}")
    B, _, H, W = x.shape
    if not (0 < h <= H + 2 * padding and 0 < w <= W + 2 * padding):
        raise ValueError(f"random_crop: cannot cut {h}x{w} from {H}x{W} images padded by {padding}")
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x  # (B, C, H + 2p, W + 2p)
    where = _draw_device(generator)
    top = torch.randint(0, padded.shape[2] - h + 1, (B,), generator=generator, device=where).to(x.device)  # (B,)
    left = torch.randint(0, padded.shape[3] - w + 1, (B,), generator=generator, device=where).to(x.device)  # (B,)
    rows = top[:, None] + torch.arange(h, device=x.device)  # (B, h)
    cols = left[:, None] + torch.arange(w, device=x.device)  # (B, w)
    batch = torch.arange(B, device=x.device)[:, None, None]  # (B, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, h, w, C)
    return out.permute(0, 3, 1, 2).contiguous()  # (B, C, h, w)


def random_horizontal_flip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left to right with probability p.

    Args:
        x: `(B, C, H, W)`, any dtype.

    Returns:
        `(B, C, H, W)`.
    """
    _check_batch(x, "random_horizontal_flip")
    if not 0 <= p <= 1:
        raise ValueError(f"random_horizontal_flip: p must be in [0, 1], got {p}")
    flip = _uniform((x.shape[0],), generator, x) < p  # (B,)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_rotation(x: torch.Tensor, degrees: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each image about its centre by an angle drawn uniformly from [-degrees, degrees].

    Bilinear sampling; corners that come from outside the image are zeros (black, before `normalize`).

    Args:
        x: `(B, C, H, W)` float.
        degrees: the largest rotation, in [0, 180].
        generator: the source of the angles.

    Returns:
        `(B, C, H, W)`, x's dtype.
    """
    _check_batch(x, "random_rotation")
    if not x.is_floating_point():
        raise TypeError(f"random_rotation takes float images, got {x.dtype} (use to_float first)")
    if not 0 <= degrees <= 180:
        raise ValueError(f"random_rotation: degrees must be in [0, 180], got {degrees}")
    if degrees == 0:
        return x
    angle = (2 * _uniform((x.shape[0],), generator, x) - 1) * math.radians(degrees)  # (B,)
    return _rotate_by(x, angle)


# RandAugment-lite: each op maps images (b, C, H, W) in [0, 1], two uniform draws u (b, 2) in [0, 1) per
# image and the magnitude m in [0, 1] to images in [0, 1]. At m = 1: brightness and contrast factors in
# [0.1, 1.9] (RandAugment's range), shifts of up to 30% of a side, rotations of up to 30 degrees, a
# black square of half a side.


def _brightness(x: torch.Tensor, u: torch.Tensor, magnitude: float) -> torch.Tensor:
    factor = 1 + 0.9 * magnitude * (2 * u[:, 0] - 1)  # (b,)
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def _contrast(x: torch.Tensor, u: torch.Tensor, magnitude: float) -> torch.Tensor:
    factor = 1 + 0.9 * magnitude * (2 * u[:, 0] - 1)  # (b,)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (b, 1, 1, 1)
    return ((x - mean) * factor.view(-1, 1, 1, 1) + mean).clamp_(0, 1)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Sample x at theta @ (x, y, 1) for each output pixel, in [-1, 1] coordinates; zeros outside."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (b, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _translate(x: torch.Tensor, u: torch.Tensor, magnitude: float) -> torch.Tensor:
    H, W = x.shape[-2:]
    # Whole pixels: a shift onto pixel centres samples exactly, without blurring.
    dy = torch.round((2 * u[:, 0] - 1) * 0.3 * magnitude * H)  # (b,)
    dx = torch.round((2 * u[:, 1] - 1) * 0.3 * magnitude * W)  # (b,)
    theta = torch.zeros(len(x), 2, 3, dtype=x.dtype, device=x.device)  # (b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * dx / W
    theta[:, 1, 2] = -2 * dy / H
    return _warp(x, theta)


def _rotate(x: torch.Tensor, u: torch.Tensor, magnitude: float) -> torch.Tensor:
    return _rotate_by(x, (2 * u[:, 0] - 1) * math.radians(30) * magnitude)


def _rotate_by(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate each image (b, C, H, W) about its centre by angle (b,) radians, bilinearly; zeros outside."""
    H, W = x.shape[-2:]
    cos, sin = angle.cos(), angle.sin()
    # A rotation in pixels, written in coordinates that run over [-1, 1] on both axes (hence H / W).
    theta = torch.zeros(len(x), 2, 3, dtype=x.dtype, device=x.device)  # (b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * H / W
    theta[:, 1, 0], theta[:, 1, 1] = sin * W / H, cos
    return _warp(x, theta)


def _cutout(x: torch.Tensor, u: torch.Tensor, magnitude: float) -> torch.Tensor:
    H, W = x.shape[-2:]
    side_h, side_w = round(0.5 * magnitude * H), round(0.5 * magnitude * W)
    top = (u[:, 0] * H).long() - side_h // 2  # (b,): the square's centre is anywhere in the image
    left = (u[:, 1] * W).long() - side_w // 2  # (b,)
    rows = torch.arange(H, device=x.device)[None, :] - top[:, None]  # (b, H)
    cols = torch.arange(W, device=x.device)[None, :] - left[:, None]  # (b, W)
    inside = ((rows >= 0) & (rows < side_h))[:, :, None] & ((cols >= 0) & (cols < side_w))[:, None, :]  # (b, H, W)
    return x.masked_fill(inside[:, None], 0)


RAND_AUGMENT_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "brightness": _brightness,
    "contrast": _contrast,
    "translate": _translate,
    "rotate": _rotate,
    "cutout": _cutout,
}


def rand_augment_lite(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    n_ops: int = 2,
    magnitude: float = 0.5,
    ops: Sequence[str] = tuple(RAND_AUGMENT_OPS),
) -> torch.Tensor:
    """Apply `n_ops` operations in turn, each picked uniformly (with replacement) per image from `ops`, each
    with a random direction and a strength up to `magnitude`.

    Args:
        x: `(B, C, H, W)` float in [0, 1] (before `normalize`).
        n_ops: operations per image (RandAugment's N).
        magnitude: in [0, 1]; 1 is each op's strongest setting (see `RAND_AUGMENT_OPS`).
        ops: names from `RAND_AUGMENT_OPS` to pick from.

    Returns:
        `(B, C, H, W)` in [0, 1], x's dtype.
    """
    _check_batch(x, "rand_augment_lite")
    if not x.is_floating_point():
        raise TypeError(f"rand_augment_lite takes float images in [0, 1], got {x.dtype} (use to_float first)")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError("rand_augment_lite takes images in [0, 1]; apply it before normalize")
    if not 0 <= magnitude <= 1:
        raise ValueError(f"rand_augment_lite: magnitude must be in [0, 1], got {magnitude}")
    if n_ops < 0:
        raise ValueError(f"rand_augment_lite: n_ops must be >= 0, got {n_ops}")
    unknown = [name for name in ops if name not in RAND_AUGMENT_OPS]
    if unknown or not ops:
        raise ValueError(f"rand_augment_lite: unknown op(s) {unknown}; choose from {', '.join(RAND_AUGMENT_OPS)}")
    functions = [RAND_AUGMENT_OPS[name] for name in ops]
    out = x.clone()
    B = x.shape[0]
    for _ in range(n_ops):
        choice = torch.randint(0, len(functions), (B,), generator=generator, device=_draw_device(generator))
        choice = choice.to(x.device)  # (B,)
        u = _uniform((B, 2), generator, x)  # (B, 2)
        for index, function in enumerate(functions):
            chosen = (choice == index).nonzero().squeeze(1)  # (b,) images that drew this op
            if len(chosen):
                out[chosen] = function(out[chosen], u[chosen], magnitude)
    return out
