"""Dataset-level summaries of a run's attention over N inputs of its own evaluation data.

Per attention module and head: the mean attention by relative offset (key position − query
position; self-attention only), the mean entropy of a query's weights, and the mean mass on the
first token and on padding (Clark et al. 2019, "What Does BERT Look At?", §3). For SASRec, the
weight the last position (the one that predicts the next item) puts on each item counted back from
the most recent (Kang & McAuley 2018, Fig. 4); for the ViT, the mean attention distance in pixels
(Dosovitskiy et al. 2021, Fig. 7). Only real (non-padding) queries count.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnkit.errors import UserError
from attnkit.viz.capture import capture_attention


class Accumulator:
    """Running sums of one module's statistics over batches (heads H, offsets within ±`reach`)."""

    def __init__(self, heads: int, reach: int) -> None:
        self.reach = reach
        self.offsets = torch.zeros(heads, 2 * reach + 1, dtype=torch.float64)
        self.entropy = torch.zeros(heads, dtype=torch.float64)
        self.first = torch.zeros(heads, dtype=torch.float64)
        self.padding = torch.zeros(heads, dtype=torch.float64)
        self.recency = torch.zeros(heads, reach, dtype=torch.float64)
        self.distance = torch.zeros(heads, dtype=torch.float64)
        self.queries = 0
        self.last_queries = 0

    def add(self, weights: Tensor, queries: Tensor, keys: Tensor, *, self_attention: bool) -> None:
        """weights (B, H, T, S) float; queries (B, T) and keys (B, S) bool, True at real positions."""
        weights = weights.double() * queries[:, None, :, None]
        self.queries += int(queries.sum())
        self.entropy += -(weights * weights.clamp_min(1e-30).log()).sum(dim=-1).sum(dim=(0, 2))
        self.first += weights[..., 0].sum(dim=(0, 2))
        self.padding += (weights * (~keys)[:, None, None, :]).sum(dim=(-1, 0, 2))
        if self_attention:
            length = weights.size(-1)
            offsets = torch.arange(length)[None, :] - torch.arange(weights.size(-2))[:, None]  # (T, S): j - i
            inside = offsets.abs() <= self.reach
            index = (offsets + self.reach).clamp(0, 2 * self.reach)  # (T, S)
            summed = weights.sum(dim=0)  # (H, T, S)
            for h in range(summed.size(0)):
                self.offsets[h].index_add_(0, index[inside], summed[h][inside])

    def add_recency(self, weights: Tensor, keys: Tensor) -> None:
        """SASRec: the last query's weights (B, H, S) over left-padded histories keys (B, S), by
        position counted back from the most recent item (1 = the last)."""
        count = min(self.reach, weights.size(-1))
        back = weights.double().flip(-1)[..., :count] * keys.flip(-1)[:, None, :count]  # (B, H, count)
        self.recency[:, :count] += back.sum(dim=0)
        self.last_queries += weights.size(0)

    def add_distance(self, weights: Tensor, centres: Tensor, first: int) -> None:
        """ViT: weights (B, H, T, S) of patch queries over patch keys from index `first`; centres
        (P, 2) in pixels. Adds Σ a·distance per head (divide by queries for the mean)."""
        patches = weights[:, :, first:, first:].double()  # (B, H, P, P)
        distance = torch.cdist(centres.double(), centres.double())  # (P, P)
        self.distance += (patches * distance).sum(dim=(0, 2, 3))

    def result(self, patches_per_input: int | None = None, inputs: int = 0) -> dict[str, Any]:
        queries = max(self.queries, 1)
        out = {
            "queries": self.queries,
            "entropy": (self.entropy / queries).tolist(),
            "mass_on_first": (self.first / queries).tolist(),
            "mass_on_padding": (self.padding / queries).tolist(),
        }
        if self.offsets.sum() > 0:
            out["by_offset"] = {
                "offsets": list(range(-self.reach, self.reach + 1)),
                "mean": (self.offsets / queries).tolist(),
            }
        if self.last_queries:
            out["by_recency"] = (self.recency / self.last_queries).tolist()
        if patches_per_input:
            out["mean_distance_px"] = (self.distance / max(patches_per_input * inputs, 1)).tolist()
        return out


def summarise(run: Any, limit: int = 200, batch_size: int = 16, reach: int = 16) -> dict[str, Any]:
    """Summaries over the first `limit` inputs of the run's evaluation data (see the module docstring)."""
    if limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    sums: dict[str, Accumulator] = {}
    kinds: dict[str, tuple[str, int | None]] = {}
    inputs = 0
    vision = run.task == "vision"
    first, centres = _patch_centres(run) if vision else (0, None)
    for batch, masks in _batches(run, limit, batch_size):
        with capture_attention(run.model) as captured:
            run.forward(batch)
        inputs += masks["source"].size(0)
        for record in captured:
            weights = record.weights.float().cpu()
            acc = sums.setdefault(record.module, Accumulator(weights.size(1), reach))
            kinds[record.module] = (record.kind, record.layer)
            queries, keys = _roles(run.task, record.module, record.kind, masks)
            acc.add(weights, queries, keys, self_attention=record.kind != "cross")
            if run.task == "recommend":
                acc.add_recency(weights[:, :, -1], keys)
            if vision:
                acc.add_distance(weights, centres, first)
    if not sums:
        raise UserError("the run's evaluation data gave no input to summarise")
    patches = None
    if vision:
        config = run.model.config
        patches = (config.image_size // config.patch_size) ** 2
    modules = [
        {"module": name, "kind": kinds[name][0], "layer": kinds[name][1], **acc.result(patches, inputs)}
        for name, acc in sums.items()
    ]
    return {"task": run.task, "inputs": inputs, "modules": modules}


def _roles(task: str, module: str, kind: str, masks: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Which positions are real among a module's queries (B, T) and keys (B, S): a translator's
    encoder reads the source, its decoder's queries are the target, its cross-attention's keys the
    source; every other model reads one sequence."""
    if task != "translate":
        return masks["source"], masks["source"]
    if module.startswith("encoder"):
        return masks["source"], masks["source"]
    return masks["target"], masks["source"] if kind == "cross" else masks["target"]


def _patch_centres(run: Any) -> tuple[int, Tensor]:
    """Index of the first patch token (after a class token) and the patches' centres (P, 2) in pixels."""
    config = run.model.config
    grid, size = config.image_size // config.patch_size, config.patch_size
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    centres = torch.stack([rows.flatten(), cols.flatten()], dim=1).float() * size + size / 2
    return (1 if config.pooling == "cls" else 0), centres


def _batches(run: Any, limit: int, batch_size: int) -> Iterator[tuple[dict[str, Tensor], dict[str, Tensor]]]:
    """(model batch, real positions {"source": (B, S)[, "target": (B, T)]}, on the CPU) over the
    first `limit` inputs of the run's evaluation data."""
    task = run.task
    if task == "vision":
        from attnkit.tasks.vision import read_splits

        _, test = read_splits(run.options)
        for start in range(0, min(limit, len(test)), batch_size):
            images = test.images[start : min(start + batch_size, limit)]
            batch = {"images": run.pipeline(images, train=False).to(run.device)}
            tokens = run.model.config.grid**2 + (1 if run.model.config.pooling == "cls" else 0)
            keep = torch.ones(images.size(0), tokens, dtype=torch.bool)
            yield batch, {"source": keep}
        return
    if task == "recommend":
        from attnkit.data.interactions import leave_one_out
        from attnkit.tasks.recommend.data import eval_set

        split = leave_one_out(run.data.sequences)
        options = run.options
        test = eval_set(split, "test", run.data.n_items, options.max_len, options.negatives, options.eval_seed)
        histories = test.inputs[:limit]
        for start in range(0, len(histories), batch_size):
            batch = run.encode(histories[start : start + batch_size])
            yield batch, {"source": (batch["ids"] != 0).cpu()}
        return
    if task == "translate":
        from attnkit.tasks.translate.data import read_split, resolve_dataset

        options = resolve_dataset(run.options)
        pairs = read_split(options, "test") or read_split(options, "valid")
        if pairs is None:
            raise UserError("the run names no test or validation pairs to summarise")
        sources, targets = pairs.src[:limit], pairs.tgt[:limit]
        for start in range(0, len(sources), batch_size):
            batch = run.encode(sources[start : start + batch_size], targets[start : start + batch_size])
            source, target = (batch["src"] != 0).cpu(), (batch["tgt_in"] != 0).cpu()
            target[:, 0] = True  # the BOS that starts every target
            yield batch, {"source": source, "target": target}
        return
    for texts in _text_batches(run, limit, batch_size):
        batch = run.encode(texts)
        keep = (batch["ids"] != 0).cpu()
        if task == "lm":  # right padding of uneven windows: every token but the padding is real
            keep = torch.tensor([[i < len(run.codec.encode(t)) for i in range(keep.size(1))] for t in texts])
        yield batch, {"source": keep}


def _text_batches(run: Any, limit: int, batch_size: int) -> Iterator[list[str]]:
    task, options = run.task, run.options
    if task == "classify":
        from attnkit.tasks.classify.data import read_splits

        train, valid, test = read_splits(options)
        texts = (test or valid or train).texts
    elif task == "mlm":
        from attnkit.tasks.mlm import read_documents, split_documents

        seed = int(run.config.get("train", {}).get("seed", 0))
        texts = split_documents(read_documents(options), options.valid_fraction, seed)[1]
    elif task == "lm":
        from attnkit.tasks.lm import read_text, split_text

        held = split_text(read_text(options.text), options.valid_fraction)[1]
        width = max(1, options.max_len)  # characters per window: at least max_len tokens' worth
        texts = [held[i : i + width] for i in range(0, max(len(held) - width, 1), width)]
    else:
        raise UserError(f"--summary does not apply to {task} runs")
    texts = [t for t in texts if t.strip()][:limit]
    for start in range(0, len(texts), batch_size):
        yield texts[start : start + batch_size]


def plot(summary: dict[str, Any], directory: str | Path) -> list[Path]:
    """Figures of a summary: attention by offset (a row per module and head), entropy and mass on the
    first token per head, and SASRec's recency or the ViT's attention distance where present."""
    from attnkit.viz.figures import _pyplot, _save

    plt = _pyplot()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    with_offsets = [m for m in summary["modules"] if "by_offset" in m]
    if with_offsets:
        rows, labels = [], []
        for module in with_offsets:
            for head, values in enumerate(module["by_offset"]["mean"]):
                rows.append(values)
                labels.append(f"{module['module']} h{head}")
        offsets = with_offsets[0]["by_offset"]["offsets"]
        fig, axis = plt.subplots(figsize=(8, 1 + 0.22 * len(rows)))
        axis.imshow(rows, cmap="Blues", aspect="auto")
        axis.set_xticks(range(len(offsets))[:: max(1, len(offsets) // 16)], offsets[:: max(1, len(offsets) // 16)])
        axis.set_yticks(range(len(labels)), labels, fontsize=6)
        axis.set_xlabel("key position - query position")
        axis.set_title(f"mean attention by offset ({summary['inputs']} inputs)", fontsize=9)
        fig.tight_layout()
        written.append(_save(fig, directory / "by_offset.png"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 1.5 + 0.25 * len(summary["modules"])))
    for axis, key, title in (
        (axes[0], "entropy", "mean entropy (nats)"),
        (axes[1], "mass_on_first", "mass on first token"),
    ):
        grid = [m[key] for m in summary["modules"]]
        shown = axis.imshow(grid, cmap="Blues", aspect="auto")
        axis.set_yticks(range(len(grid)), [m["module"] for m in summary["modules"]], fontsize=6)
        axis.set_xlabel("head")
        axis.set_title(title, fontsize=9)
        fig.colorbar(shown, ax=axis, fraction=0.046)
    fig.tight_layout()
    written.append(_save(fig, directory / "heads.png"))
    extra = [m for m in summary["modules"] if "by_recency" in m or "mean_distance_px" in m]
    if extra:
        fig, axis = plt.subplots(figsize=(6, 3.5))
        for module in extra:
            if "by_recency" in module:
                for head, values in enumerate(module["by_recency"]):
                    axis.plot(range(1, len(values) + 1), values, label=f"{module['module']} h{head}")
                axis.set_xlabel("item position counted back from the most recent")
                axis.set_ylabel("weight of the last position")
            else:
                layer = module["layer"] if module["layer"] is not None else 0
                axis.scatter([layer] * len(module["mean_distance_px"]), module["mean_distance_px"], s=12)
                axis.set_xlabel("layer")
                axis.set_ylabel("mean attention distance (pixels)")
        if any("by_recency" in m for m in extra):
            axis.legend(fontsize=6)
        fig.tight_layout()
        written.append(_save(fig, directory / ("by_recency.png" if "by_recency" in extra[0] else "distance.png")))
    return written
