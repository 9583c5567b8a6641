"""Generation graphs for onnxruntime: keys and values of earlier positions as explicit inputs and outputs.

`attnkit export onnx` writes them beside model.onnx for translate and lm runs:

- translate: `encoder.onnx`, src (B, S) -> the cross-attention keys and values of every decoder
  layer, `cross_k_i`, `cross_v_i` (B, H, S, Dh), computed once per source; and `decoder_step.onnx`,
  (tokens (B, T_new), src (B, S), cross_k_i, cross_v_i, past_k_i, past_v_i (B, H, T, Dh)) ->
  (logits (B, V) of the token after the last new one, present_k_i, present_v_i (B, H, T + T_new, Dh)).
- lm: `decoder_step.onnx`, (tokens (B, T_new), past_k_i, past_v_i) -> (logits (B, V), present_k_i,
  present_v_i).

The first step passes pasts of length 0. `OnnxStepper` is a `attnkit.decode.Stepper` over the
graphs, so attnkit's own searches decode through onnxruntime (the export checks that greedy search
gives the same tokens through the graphs as through the model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attnkit.nn.stacks import DecoderCache


class ConcatCache:
    """A key/value cache over given tensors that concatenates on append: the one form whose traced
    graph serves every past length (`KVCache` writes into buffers it grows, a data-dependent branch)."""

    projection = None  # no fused q/k/v weights kept between steps: the graph has the parameters

    def __init__(self, k: Tensor | None = None, v: Tensor | None = None) -> None:
        self.k, self.v = k, v

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.size(-2)

    @property
    def offset(self) -> int:
        return self.length

    def visible(self, new: int, causal: bool) -> None:
        return None  # the keys held are exactly the visible ones (causal queries aligned at the end)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=-2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=-2)
        return self.k, self.v


def kv_names(prefix: str, layers: int) -> list[str]:
    """[prefix_k_0, prefix_v_0, prefix_k_1, ...]."""
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("k", "v")]


class TranslatorEncoder(nn.Module):
    """src (B, S) -> (cross_k_0, cross_v_0, ...) (B, H, S, Dh): the encoder and every decoder layer's
    cross-attention projection of its output, done once per source."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor) -> tuple[Tensor, ...]:
        memory = self.model.encode(src)  # (B, S, D)
        out: list[Tensor] = []
        for layer in self.model.decoder.layers:
            attention = layer.cross_attn
            out += [attention._split_heads(attention.k_proj(memory)), attention._split_heads(attention.v_proj(memory))]
        return tuple(out)


class TranslatorStep(nn.Module):
    """(tokens (B, T_new), src (B, S), cross k/v of each layer, past k/v of each layer) ->
    (logits (B, V), present k/v of each layer)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.layers = model, len(model.decoder.layers)

    def forward(self, tokens: Tensor, src: Tensor, *kv: Tensor) -> tuple[Tensor, ...]:
        n = self.layers
        cross = [ConcatCache(kv[2 * i], kv[2 * i + 1]) for i in range(n)]
        past = [ConcatCache(kv[2 * n + 2 * i], kv[2 * n + 2 * i + 1]) for i in range(n)]
        cache = DecoderCache(past, cross, decoded=past[0].length)
        # The cross caches hold the keys, so the memory is never read; any tensor stands for it.
        hidden = self.model.decode_hidden(tokens, kv[0], src != self.model.config.pad_id, cache=cache)
        logits = self.model.lm_head(hidden[:, -1])  # (B, V)
        return (logits, *[t for c in past for t in (c.k, c.v)])


class LanguageModelStep(nn.Module):
    """(tokens (B, T_new), past k/v of each block) -> (logits (B, V), present k/v of each block)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.layers = model, len(model.new_cache())

    def forward(self, tokens: Tensor, *kv: Tensor) -> tuple[Tensor, ...]:
        past = [ConcatCache(kv[2 * i], kv[2 * i + 1]) for i in range(self.layers)]
        logits = self.model(tokens, cache=past)[:, -1]  # (B, V)
        return (logits, *[t for c in past for t in (c.k, c.v)])


def heads(model: nn.Module) -> tuple[int, int]:
    """(H, Dh) of the model's attention layers."""
    from attnkit.nn.multihead import MultiHeadAttention

    attention = next(m for m in model.modules() if isinstance(m, MultiHeadAttention))
    return attention.n_heads, attention.head_dim


def export_generation(run: Any, folder: Path, opset: int | None) -> list[str]:
    """Write the generation graphs of a translate or lm run into `folder`; their file names."""
    model = run.model
    n_heads, head_dim = heads(model)
    batch = torch.export.Dim("batch", min=1, max=4096)
    new = torch.export.Dim("new_length", min=1, max=model.config.max_len)
    past_len = torch.export.Dim("past_length", min=0, max=model.config.max_len)
    generator = torch.Generator().manual_seed(0)

    def past(b: int, t: int) -> list[Tensor]:
        return [torch.randn(b, n_heads, t, head_dim, generator=generator) for _ in range(2)]

    written = []
    if run.task == "translate":
        layers = len(model.decoder.layers)
        src_len = torch.export.Dim("src_length", min=1, max=model.config.max_len)
        src = torch.randint(5, model.config.src_vocab_size, (2, 5), generator=generator)
        _export(
            TranslatorEncoder(model),
            (src,),
            ({0: batch, 1: src_len},),
            ["src"],
            kv_names("cross", layers),
            folder / "encoder.onnx",
            opset,
        )
        cross = TranslatorEncoder(model)(src)
        pasts = [t for _ in range(layers) for t in past(2, 3)]
        kv_axes = [{0: batch, 2: src_len}] * (2 * layers) + [{0: batch, 2: past_len}] * (2 * layers)
        _export(
            TranslatorStep(model),
            (torch.full((2, 2), 5), src, *cross, *pasts),
            ({0: batch, 1: new}, {0: batch, 1: src_len}, tuple(kv_axes)),  # forward(tokens, src, *kv)
            ["tokens", "src", *kv_names("cross", layers), *kv_names("past", layers)],
            ["logits", *kv_names("present", layers)],
            folder / "decoder_step.onnx",
            opset,
        )
        written += ["encoder.onnx", "decoder_step.onnx"]
    else:
        layers = len(model.new_cache())
        pasts = [t for _ in range(layers) for t in past(2, 3)]
        _export(
            LanguageModelStep(model),
            (torch.full((2, 2), 1), *pasts),
            ({0: batch, 1: new}, tuple([{0: batch, 2: past_len}] * (2 * layers))),  # forward(tokens, *kv)
            ["tokens", *kv_names("past", layers)],
            ["logits", *kv_names("present", layers)],
            folder / "decoder_step.onnx",
            opset,
        )
        written.append("decoder_step.onnx")
    return written


def _export(module, args, shapes, inputs, outputs, path: Path, opset: int | None) -> None:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        program = torch.onnx.export(
            module.eval(),
            args,
            dynamo=True,
            dynamic_shapes=shapes,
            input_names=inputs,
            output_names=outputs,
            opset_version=opset,
            verbose=False,
        )
        program.save(str(path))


class OnnxGenerator:
    """The onnxruntime sessions of an export's generation graphs, made once and shared by the
    `OnnxStepper`s of every search.

    Args:
        folder: an export's folder (decoder_step.onnx, and encoder.onnx for translation).
        threads: onnxruntime's intra-op threads (default: its own choice).
    """

    def __init__(self, folder: Path | str, threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        folder, providers = Path(folder), ["CPUExecutionProvider"]
        self.step = onnxruntime.InferenceSession(str(folder / "decoder_step.onnx"), options, providers=providers)
        self.encoder = None
        if (folder / "encoder.onnx").is_file():
            self.encoder = onnxruntime.InferenceSession(str(folder / "encoder.onnx"), options, providers=providers)
        self.pasts = [i.name for i in self.step.get_inputs() if i.name.startswith("past_")]
        self.heads, self.head_dim = _past_shape(self.step)


class OnnxStepper:
    """An `attnkit.decode.Stepper` over an export's generation graphs in onnxruntime, so that
    `greedy_decode`, `beam_search` and `sample` (and `translate_ids(..., stepper=...)`) decode through
    them: for translation the encoder graph runs once, each step feeds the new tokens and the pasts,
    and `reorder` keeps the rows the search keeps.

    Args:
        generator: an `OnnxGenerator`.
        src_ids: (B, S) source ids, right-padded, for a translate export; None for an lm export.
        max_len: an lm's context (its positions): past it the model sees the last `max_len` tokens,
            and the pasts are rebuilt from them at every step, as `CausalLMStepper(max_len=...)` does.
    """

    def __init__(self, generator: OnnxGenerator, src_ids: Tensor | None = None, max_len: int | None = None) -> None:
        if (src_ids is None) != (generator.encoder is None):
            raise ValueError("src_ids go with a translate export (encoder.onnx), and only with one")
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.max_len, self.held = max_len, 0  # positions the pasts hold
        self.generator, self.fixed = generator, {}
        self.sources: np.ndarray | None = None  # (B,) the source each row decodes (translate)
        self.device = torch.device("cpu") if src_ids is None else src_ids.device
        if src_ids is not None:
            src = src_ids.cpu().numpy()
            self.sources = np.arange(src.shape[0])
            cross = generator.encoder.run(None, {"src": src})
            self.fixed = {
                "src": src,
                **dict(zip([o.name for o in generator.encoder.get_outputs()], cross, strict=True)),
            }
        # Empty pasts are made at the first step, for the batch the search has by then (beam search
        # expands its rows before it); reordering them earlier would change nothing.
        self.past: dict[str, np.ndarray] | None = None
        self.decoded = 0

    def step(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) prefixes -> logits (B, V) of the next token."""
        new = tokens[:, self.decoded :]  # (B, T_new)
        if self.max_len is not None and self.held + new.size(1) > self.max_len:
            self.past, new = None, tokens[:, -self.max_len :]  # slide: the window's pasts anew
        if self.past is None:
            g = self.generator
            self.past = dict.fromkeys(g.pasts, np.zeros((tokens.size(0), g.heads, 0, g.head_dim), np.float32))
            self.held = 0
        logits, *present = self.generator.step.run(None, {**self.fixed, **self.past, "tokens": new.cpu().numpy()})
        self.past = dict(zip(self.generator.pasts, present, strict=True))
        self.decoded, self.held = tokens.size(1), self.held + new.size(1)
        return torch.from_numpy(logits).to(self.device)

    def reorder(self, index: Tensor) -> None:
        """Keep rows `index` (N,) of the source, its cross keys/values and the pasts (what depends on
        the source only when a row now decodes another source, as `Seq2SeqStepper.reorder`)."""
        rows = index.cpu().numpy()
        if self.sources is not None:
            sources = self.sources.take(rows)
            if not np.array_equal(sources, self.sources):
                self.fixed = {name: array.take(rows, axis=0) for name, array in self.fixed.items()}
            self.sources = sources
        if self.past is not None:
            self.past = {name: array.take(rows, axis=0) for name, array in self.past.items()}


def greedy(
    folder: Path | str,
    start: np.ndarray,
    *,
    max_new_tokens: int,
    eos_id: int | None,
    src: np.ndarray | None = None,
    pad_id: int | None = 0,
    min_new_tokens: int = 0,
) -> np.ndarray:
    """`attnkit.decode.greedy_decode` through an export's graphs: (B, T) generated tokens for start
    tokens (B, T0) int64 (BOS, or a prompt), with `src` (B, S) int64 source ids for a translate export;
    other arguments as `greedy_decode`'s."""
    from attnkit.decode import greedy_decode

    sources = None if src is None else torch.from_numpy(src)
    stepper = OnnxStepper(OnnxGenerator(folder), sources)
    return greedy_decode(
        stepper,
        torch.from_numpy(start),
        eos_id=eos_id,
        max_new_tokens=max_new_tokens,
        pad_id=pad_id,
        min_new_tokens=min_new_tokens,
    ).numpy()


def _past_shape(session: Any) -> tuple[int, int]:
    """(H, Dh) of the step graph's past inputs (their fixed axes)."""
    shape = next(i.shape for i in session.get_inputs() if i.name.startswith("past_"))
    return int(shape[1]), int(shape[3])
