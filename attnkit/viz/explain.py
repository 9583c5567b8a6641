"""Explain one input of a trained run: its attention maps, a saliency per input token, the prediction.

    from attnkit.runs import open_run
    from attnkit.viz.explain import explain
    explanation = explain(open_run("runs/r8"), "Oil prices rose sharply")
    explanation.to_json()               # the schema below
    explanation.to_png("out/")          # heatmaps per module (all heads), saliency, alignment

Every task goes through its run's `encode` and the model inside `capture_attention`; the maps are
those of the one input (the batch dimension dropped). JSON schema (`to_json()`):

    task: str                    the run's task
    tokens: [str]                the input as the model saw it (classify, mlm, lm: tokens; recommend:
                                 item ids, oldest first; vision: "cls" and patches "r,c")
    source_tokens, target_tokens translate only: the source, and per decoder position the token it
                                 produced (the translation, then the end of sentence)
    grid: [rows, cols]           vision only: the patch grid
    prediction: any              the run's prediction for the input
    saliency: [float] | null     classify and vision: one value per token of `tokens` (patches only)
    saliency_method: str | null  how it was computed
    fidelity: float              max |output inside capture - output of the fused path|
    maps: [{module, kind, layer, weights}]   weights: nested lists H × T × S
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnkit.errors import UserError
from attnkit.viz.attention import alignment, gradient_rollout, pooled_row
from attnkit.viz.capture import _LAYER, AttentionCapture, attention_modules, capture_attention

GRADIENT_ROLLOUT = "gradient-weighted attention rollout (Chefer et al. 2021) of the predicted class, identity removed"
LABELLED_UP_TO = 48  # tokens per axis that a heatmap labels; longer axes are drawn without labels


@dataclass
class MapView:
    """One attention module's map for the explained input: weights (H, T, S)."""

    module: str
    kind: str
    layer: int | None
    weights: Tensor


@dataclass
class Explanation:
    """What `explain` found for one input; see the module docstring for the fields' meaning."""

    task: str
    tokens: list[str]
    prediction: Any
    maps: list[MapView]
    fidelity: float
    saliency: list[float] | None = None
    saliency_method: str | None = None
    source_tokens: list[str] | None = None
    target_tokens: list[str] | None = None
    grid: tuple[int, int] | None = None
    image: Tensor | None = field(default=None, repr=False)  # vision: (C, H, W) in [0, 1], for overlays
    step: dict[str, Any] | None = field(default=None, repr=False)  # module, q (H,T,Dh), k, v (H,S,Dh), keep (T,S)

    def to_html(self, path: str | Path | None = None) -> str:
        """One self-contained HTML page (no network request); written to `path` when given."""
        from attnkit.atomic import atomic_path
        from attnkit.viz.html import render

        page = render(self)
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_text(page, encoding="utf-8")
        return page

    def _repr_html_(self) -> str:
        """Jupyter shows the page in a frame of its own."""
        import html

        return f'<iframe srcdoc="{html.escape(self.to_html())}" style="width:100%;height:720px;border:0"></iframe>'

    def select(self, layer: int | None = None, head: int | None = None) -> list[MapView]:
        """The maps of one layer (all when None), with one head kept (all when None); a layer or head
        the model does not have is a `UserError`."""
        layers = sorted({m.layer for m in self.maps if m.layer is not None})
        if layer is not None and layer not in layers:
            raise UserError(f"--layer {layer}: the model has layers {layers[0]}..{layers[-1]}")
        heads = self.maps[0].weights.size(0)
        if head is not None and not 0 <= head < heads:
            raise UserError(f"--head {head}: the model has heads 0..{heads - 1}")
        chosen = [m for m in self.maps if layer is None or m.layer == layer]
        if head is not None:
            chosen = [MapView(m.module, m.kind, m.layer, m.weights[head : head + 1]) for m in chosen]
        return chosen

    def to_json(self, layer: int | None = None, head: int | None = None) -> dict[str, Any]:
        """The explanation as plain JSON-ready data (the schema of the module docstring)."""
        data: dict[str, Any] = {"task": self.task, "tokens": self.tokens}
        if self.source_tokens is not None:
            data.update(source_tokens=self.source_tokens, target_tokens=self.target_tokens)
        if self.grid is not None:
            data["grid"] = list(self.grid)
        data.update(
            prediction=self.prediction,
            saliency=self.saliency,
            saliency_method=self.saliency_method,
            fidelity=self.fidelity,
            maps=[
                {"module": m.module, "kind": m.kind, "layer": m.layer, "weights": m.weights.tolist()}
                for m in self.select(layer, head)
            ],
        )
        return data

    def to_png(self, directory: str | Path, layer: int | None = None, head: int | None = None) -> list[Path]:
        """Heatmaps of the chosen maps (one figure per module, a panel per head), the saliency (a strip
        over the tokens, or an overlay on the image) and, for translation, the alignment. Returns the
        files written."""
        from attnkit.viz import figures

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for view in self.select(layer, head):
            rows, cols = self._axes(view)
            path = directory / f"{view.module}.png"
            figures.heads(path, view.weights, rows, cols, f"{view.module} ({view.kind})", LABELLED_UP_TO)
            written.append(path)
        if self.saliency is not None and self.image is not None and self.grid is not None:
            written.append(figures.overlay(directory / "saliency.png", self.image, self.saliency, self.grid))
        elif self.saliency is not None:
            written.append(figures.strip(directory / "saliency.png", self.tokens, self.saliency, self.saliency_method))
        cross = [m for m in self.maps if m.kind == "cross"]
        if cross:
            averaged, _ = alignment(cross[-1].weights[None])
            path = directory / "alignment.png"
            title = f"alignment: {cross[-1].module}"
            panel = ["all heads averaged"]
            figures.heads(path, averaged, self.target_tokens, self.source_tokens, title, LABELLED_UP_TO, panel)
            written.append(path)
        return written

    def _axes(self, view: MapView) -> tuple[list[str], list[str]]:
        """Row (query) and column (key) labels of a map."""
        if self.source_tokens is None:
            return self.tokens, self.tokens
        if view.kind == "cross":
            return self.target_tokens, self.source_tokens
        if view.module.startswith("encoder"):
            return self.source_tokens, self.source_tokens
        return self.target_tokens, self.target_tokens


def explain(run: Any, item: Any, *, step_layer: int | None = None, **options: Any) -> Explanation:
    """Explain one input of `run` (an `attnkit.runs.Run`): a text (classify, mlm), a sentence
    (translate), a prompt (lm; `max_new_tokens` continues it greedily first, default 20), a history of
    item ids (recommend) or an image file (vision).

    The q, k and v of one module are kept for the step-by-step view: the last attention module of
    layer `step_layer` (default: of the model)."""
    how = _TASKS.get(run.task)
    if how is None:
        raise UserError(f"explain does not apply to {run.task} runs")
    if isinstance(item, str) and not item.strip() and run.task != "vision":
        raise UserError("the input is empty: give a text to explain")
    names = [name for name, _ in attention_modules(run.model)]
    if step_layer is not None:
        names = [name for name in names if _LAYER.findall(name)[-1:] == [str(step_layer)]] or names
    return how(run, item, names[-1], **options)


# ------------------------------------------------------------------------- per task


def _captured(run: Any, batch: dict[str, Tensor], step: str) -> tuple[list[MapView], float, dict[str, Any], Tensor]:
    """The maps of `batch` (one input), the fidelity (max |captured output - fused output|), the q, k, v
    and mask of module `step`, and the fused output (the prediction is made from it, not recomputed)."""
    with capture_attention(run.model, keep_qkv=[step], reference_rows=1) as captured:
        fused, inside = run.forward(_twice(batch)).split(1)  # the fused row and the captured one
    fidelity = float((inside.float() - fused.float()).abs().max())
    views = [MapView(m.module, m.kind, m.layer, m.weights[0]) for m in captured]
    return views, fidelity, _step(captured, step), fused


def _twice(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """A one-input batch with its input twice: row 0 runs fused, row 1 captured (`reference_rows=1`)."""
    return {key: torch.cat([value, value]) for key, value in batch.items()}


def _step(captured: AttentionCapture, name: str) -> dict[str, Any]:
    """The first input's q (H, T, Dh), k and v (H, S, Dh) of module `name`, and which keys each query
    may attend to, keep (T, S): the mask it was given and, when causal, nothing after the query."""
    record = captured[name]
    q, k, v = record.q[0][0].float(), record.k[0][0].float(), record.v[0][0].float()
    length, width = q.size(1), k.size(1)
    keep = torch.ones(length, width, dtype=torch.bool)
    if record.masks[0] is not None:
        mask = record.masks[0].cpu()
        keep = keep & mask.expand(*mask.shape[:-2], length, width).reshape(-1, length, width)[0]
    if record.kind == "causal":  # queries are the last positions: query i sits at width - length + i
        keep = keep & torch.ones(length, width, dtype=torch.bool).tril(diagonal=width - length)
    return {"module": name, "q": q.cpu(), "k": k.cpu(), "v": v.cpu(), "keep": keep}


def _saliency(run: Any, batch: dict[str, Tensor], pooling: str, keep: Tensor | None, step: str):
    """Maps, fidelity, logits, the gradient rollout's pooled row for the predicted class, and the
    step-by-step module's q, k, v and mask."""
    with (
        _frozen(run.model),
        capture_attention(run.model, keep_grad=True, keep_qkv=[step], reference_rows=1) as captured,
        torch.enable_grad(),
    ):
        fused, logits = run.model(*_twice(batch).values()).float().split(1)  # the fused row, the captured one
        logits[0, int(logits[0].argmax())].backward()
    maps = list(captured)
    relevance = gradient_rollout([m.weights.detach() for m in maps], [m.calls[0].grad for m in maps])
    # Without the identity R starts from: what attention added to each position (Chefer et al. read
    # the class token's row, where the identity only marks the class token itself).
    relevance = relevance - torch.eye(relevance.size(-1), dtype=relevance.dtype, device=relevance.device)
    row = pooled_row(relevance, pooling, keep)[0]  # (T,)
    views = [MapView(m.module, m.kind, m.layer, m.weights[0].detach()) for m in maps]
    fidelity = float((logits.detach() - fused.detach()).abs().max())
    return views, fidelity, logits.detach(), row, _step(captured, step)


@contextlib.contextmanager
def _frozen(model: torch.nn.Module) -> Iterator[None]:
    """No gradients for `model`'s parameters inside: the gradient rollout needs only the attention
    weights' gradients, and the backward pass then skips every weight gradient (about half its work)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in parameters:
            p.requires_grad_(False)
        yield
    finally:
        for p in parameters:
            p.requires_grad_(True)


def _explain_classify(run: Any, text: str, step: str) -> Explanation:
    batch = run.encode([text])
    ids = batch["ids"][0].tolist()
    keep = batch["ids"] != 0
    views, fidelity, logits, row, steps = _saliency(run, batch, run.options.pooling, keep, step)
    probs = logits.softmax(dim=-1)[0] if not run.options.multi_label else logits.sigmoid()[0]
    best = int(probs.argmax())
    return Explanation(
        task=run.task,
        tokens=[run.tokenizer.id_to_token(i) for i in ids],
        prediction={"label": run.classes[best], "probability": float(probs[best])},
        maps=views,
        fidelity=fidelity,
        saliency=row.tolist(),
        saliency_method=f"{GRADIENT_ROLLOUT}, {run.options.pooling}-pooled row",
        step=steps,
    )


def _explain_vision(run: Any, path: str, step: str) -> Explanation:
    batch = run.encode([path])
    config = run.model.config
    views, fidelity, logits, row, steps = _saliency(run, batch, config.pooling, None, step)
    grid = config.image_size // config.patch_size
    patches = row[1:] if config.pooling == "cls" else row  # the class token is not a patch
    probs = logits.softmax(dim=-1)[0]
    best = int(probs.argmax())
    from attnkit.data.images import read_image

    image = read_image(path, channels=config.in_channels, size=(config.image_size, config.image_size)).float() / 255
    names = [f"{r},{c}" for r in range(grid) for c in range(grid)]
    return Explanation(
        task=run.task,
        tokens=(["cls"] if config.pooling == "cls" else []) + names,
        prediction={"label": run.classes[best], "probability": float(probs[best])},
        maps=views,
        fidelity=fidelity,
        saliency=patches.tolist(),
        saliency_method=f"{GRADIENT_ROLLOUT}, {config.pooling}-pooled row, patches only",
        grid=(grid, grid),
        image=image,
        step=steps,
    )


def _explain_translate(run: Any, sentence: str, step: str, search: str = "greedy") -> Explanation:
    translation = run.translate([sentence], search=search)[0]
    batch = run.encode([sentence], [translation])
    views, fidelity, steps, _ = _captured(run, batch, step)
    decode = run.tokenizer.decode
    source = [decode([i]) for i in batch["src"][0].tolist()]
    produced = [*batch["tgt_in"][0, 1:].tolist(), run.model.eos_id]  # the token each position produces
    return Explanation(
        task=run.task,
        tokens=source,
        prediction=translation,
        maps=views,
        fidelity=fidelity,
        source_tokens=source,
        target_tokens=[decode([i]) if i != run.model.eos_id else "</s>" for i in produced],
        step=steps,
    )


def _explain_recommend(run: Any, history: list[str], step: str, top_k: int = 10) -> Explanation:
    internal = run._internal([str(item) for item in history], run.item_index())
    if not internal:
        raise UserError("the history is empty: give item ids")
    internal = internal[-run.options.max_len :]
    batch = run.encode([internal])
    views, fidelity, steps, scores = _captured(run, batch, step)
    width = batch["ids"].size(1)
    items = [""] * (width - len(internal)) + [run.data.items[i] for i in internal]  # left padding unnamed
    top = [{"item": run.data.items[i], "score": s} for i, s in run.top_items(internal, scores[0], top_k)]
    return Explanation(task=run.task, tokens=items, prediction=top, maps=views, fidelity=fidelity, step=steps)


def _explain_lm(run: Any, prompt: str, step: str, max_new_tokens: int = 20) -> Explanation:
    continuation = run.generate(prompt, max_new_tokens=max_new_tokens, temperature=0.0)[0] if max_new_tokens else ""
    batch = run.encode([prompt + continuation])
    views, fidelity, steps, _ = _captured(run, batch, step)
    tokens = [run.codec.decode([i]) for i in batch["ids"][0].tolist()]
    return Explanation(task=run.task, tokens=tokens, prediction=continuation, maps=views, fidelity=fidelity, step=steps)


def _explain_mlm(run: Any, text: str, step: str, top_k: int = 5) -> Explanation:
    batch = run.encode([text])
    views, fidelity, steps, logits = _captured(run, batch, step)
    tokens = [run.tokenizer.id_to_token(i) for i in batch["ids"][0].tolist()]
    fills = [[{"token": t, "probability": p} for t, p in mask] for mask in run.fills(batch["ids"], logits, top_k)[0]]
    return Explanation(task=run.task, tokens=tokens, prediction=fills, maps=views, fidelity=fidelity, step=steps)


_TASKS = {
    "classify": _explain_classify,
    "vision": _explain_vision,
    "translate": _explain_translate,
    "recommend": _explain_recommend,
    "lm": _explain_lm,
    "mlm": _explain_mlm,
}
