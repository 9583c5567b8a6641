"""One self-contained HTML file per explanation: data, script and style inlined, no network request.

Views: the model view (every module × head as a thumbnail; click one to open it), the matrix view
of the open map (canvas, with a readout of the weight under the pointer), the head view (lines from
the chosen query token to the keys, for up to `HEAD_VIEW_TOKENS` tokens), the image with a
per-patch overlay (vision), and the step-by-step panel: for one query and head of one module, the
scores q·kᵀ, their scaling by 1/√d_k, the mask (blocked keys as −∞), the softmax and the first
dimensions of the weighted sum of v, computed in the page from the checkpoint's own q, k and v.

Weights and q, k, v are stored as float16, base64-encoded, one block per map, decoded when the map is
first opened; the thumbnails of the model view are max-pooled uint8 copies, drawn at once.
"""

from __future__ import annotations

import base64
import html
import io
import json
from importlib import resources
from typing import Any

import numpy as np
import torch
from torch import Tensor

HEAD_VIEW_TOKENS = 128
THUMBNAIL = 40  # cells per side of a model-view thumbnail


def _half(tensor: Tensor) -> str:
    """A tensor as little-endian float16 bytes, base64."""
    return base64.b64encode(tensor.detach().to(torch.float16).cpu().numpy().astype("<f2").tobytes()).decode()


def _png(image: Tensor) -> str:
    """(C, H, W) in [0, 1] -> a PNG as base64."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picture = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    buffer = io.BytesIO()
    plt.imsave(buffer, picture.squeeze(-1) if picture.shape[-1] == 1 else picture, cmap="gray", format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def _thumbnails(weights: Tensor) -> tuple[str, list[int]]:
    """weights (H, T, S) -> each head max-pooled to at most THUMBNAIL x THUMBNAIL cells (the largest
    weight of each block, so that a sharp peak stays visible), as uint8 (255 = weight 1), base64."""
    size = (min(THUMBNAIL, weights.size(1)), min(THUMBNAIL, weights.size(2)))
    pooled = torch.nn.functional.adaptive_max_pool2d(weights.float()[None], size)[0]  # (H, t, s)
    data = (pooled.clamp(0, 1) * 255).round().to(torch.uint8).numpy().tobytes()
    return base64.b64encode(data).decode(), list(size)


def page_data(explanation: Any) -> dict[str, Any]:
    """What the page's script reads: each map's layout, its weights (float16, decoded when the map is
    opened) and its thumbnails (uint8, drawn at once)."""
    maps = []
    for view in explanation.maps:
        rows, cols = explanation._axes(view)
        heads, length, width = view.weights.shape
        thumbs, thumb_shape = _thumbnails(view.weights)
        maps.append(
            {
                "module": view.module,
                "kind": view.kind,
                "layer": view.layer,
                "heads": heads,
                "rows": rows,
                "cols": cols,
                "shape": [heads, length, width],
                "weights": _half(view.weights),
                "thumbs": thumbs,
                "thumb_shape": thumb_shape,
            }
        )
    data: dict[str, Any] = {
        "task": explanation.task,
        "prediction": explanation.prediction,
        "fidelity": explanation.fidelity,
        "saliency": explanation.saliency,
        "saliency_method": explanation.saliency_method,
        "grid": list(explanation.grid) if explanation.grid else None,
        "maps": maps,
        "head_view_tokens": HEAD_VIEW_TOKENS,
    }
    if explanation.image is not None:
        data["image"] = _png(explanation.image)
    step = explanation.step
    if step is not None:
        data["step"] = {
            "module": step["module"],
            "map": next(i for i, m in enumerate(maps) if m["module"] == step["module"]),
            "shape": [*step["q"].shape, step["k"].size(1)],  # H, T, Dh, S
            "q": _half(step["q"]),
            "k": _half(step["k"]),
            "v": _half(step["v"]),
            "keep": base64.b64encode(step["keep"].to(torch.uint8).numpy().tobytes()).decode(),
        }
    return data


def render(explanation: Any) -> str:
    """The explanation as one self-contained HTML document: viewer.html with viewer.js and the data inlined."""
    payload = json.dumps(page_data(explanation), ensure_ascii=False).replace("</", "<\\/")
    title = html.escape(f"attnkit explain: {explanation.task}")
    folder = resources.files("attnkit.viz")
    page = (folder / "viewer.html").read_text(encoding="utf-8")
    script = (folder / "viewer.js").read_text(encoding="utf-8")
    return page.replace("__SCRIPT__", script).replace("__TITLE__", title).replace("__DATA__", payload)
