"""Generating token sequences from a trained model: greedy search, beam search and sampling, on the KV cache.

Beam search is the Transformer paper's (Vaswani et al. 2017, §6.1: beam size 4, length penalty α = 0.6)
with the length penalty of Wu et al. 2016 (GNMT), lp(Y) = ((5 + |Y|) / 6)^α, hypotheses ranked by
log P(Y | X) / lp(Y). Sampling offers temperature, top-k filtering (Fan et al. 2018) and nucleus (top-p)
filtering (Holtzman et al. 2019, "The Curious Case of Neural Text Degeneration").

The search functions know nothing of the model: they drive a `Stepper`, which turns the tokens so far
into next-token logits and follows the search when it drops, keeps or duplicates batch rows.
`Seq2SeqStepper` drives an encoder-decoder `Transformer`; `CausalLMStepper` a decoder-only language model.
Either can recompute every prefix from scratch (`use_cache=False`), the reference the cache is held to.

Conventions shared by the search functions:
- `start` holds the tokens each row begins with: (B,) or (B, T0), e.g. BOS, or a prompt. Rows share T0
  (no padding inside `start`).
- Outputs hold the generated tokens only (not `start`), a row's eos included, and `pad_id` after a row's
  end. The padding token is never generated: its log-probability is set to -inf (as fairseq does), since
  a generated pad could not be told from the padding of a row that has ended.
- `max_new_tokens` is an int or a per-row tensor (B,); a row that reaches it ends without eos.
- Rows that have ended are dropped from the batch (`Stepper.reorder`), so they cost nothing more. A
  stepper follows one search and is used up by it.
- Each model call runs in eval mode under `torch.inference_mode()`; every module's training flag is
  restored afterwards, so a model being trained can be decoded mid-training.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Literal, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from attnkit.nn.packed import PackedLinear
from attnkit.nn.transformer import Transformer

__all__ = [
    "BeamSearchResult",
    "CausalLMStepper",
    "Seq2SeqStepper",
    "Stepper",
    "beam_search",
    "greedy_decode",
    "length_penalty",
    "sample",
    "top_k_filter",
    "top_p_filter",
]


class Stepper(Protocol):
    """What the search functions need from a model.

    `step` receives the whole sequence of every row so far: the start tokens, then one column per
    search step. A cached stepper feeds the model only the columns it has not seen.
    """

    def step(self, tokens: Tensor) -> Tensor:
        """tokens (N, T) -> logits (N, V) for the token after position T - 1."""
        ...

    def reorder(self, index: Tensor) -> None:
        """Keep rows `index` (N',) of the batch in that order (drop, keep, duplicate rows)."""
        ...


@contextmanager
def _evaluating(modules: list[nn.Module]) -> Iterator[None]:
    """Eval mode and inference mode for the duration; each module's training flag restored afterwards.

    `modules` is `list(model.modules())`, listed once per stepper: a search enters this at every
    step, and walking the module tree (or `model.eval()`) each time would cost a third of a batch-1
    step. Only the modules in training mode are switched, and switched back.
    """
    training = [module for module in modules if module.training]
    for module in training:
        module.training = False
    try:
        with nullcontext() if torch.is_inference_mode_enabled() else torch.inference_mode():
            yield
    finally:
        for module in training:
            module.training = True


class Seq2SeqStepper:
    """Steps an encoder-decoder `Transformer`: encodes the source once, then decodes token by token.

    Args:
        model: the Transformer.
        src_ids: (B, S) source ids, right-padded with `pad_id`.
        pad_id: the source padding id (default: `model.config.pad_id`).
        use_cache: feed the decoder only the new tokens of each step, reusing the keys and values of
            the earlier ones (and the cross-attention's projection of the source); False recomputes
            the whole target prefix at every step.
    """

    def __init__(
        self, model: Transformer, src_ids: Tensor, *, pad_id: int | None = None, use_cache: bool = True
    ) -> None:
        self.model = model
        pad_id = model.config.pad_id if pad_id is None else pad_id
        self.src_keep = src_ids != pad_id  # (B, S)
        self.sources = torch.arange(src_ids.size(0), device=src_ids.device)  # (B,) the source of each row
        self._modules = list(model.modules())
        with _evaluating(self._modules):
            self.memory = model.encode(src_ids)  # (B, S, D)
        self.cache = model.new_cache() if use_cache else None

    def step(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) target prefixes -> logits (B, V) of the next target token."""
        with _evaluating(self._modules):
            if self.cache is None:
                hidden = self.model.decode_hidden(tokens, self.memory, self.src_keep)  # (B, T, D)
            else:
                new = tokens[:, self.cache.length :]  # (B, T_new)
                if new.size(1) == 0:
                    raise ValueError(f"step got {tokens.size(1)} tokens, all of them already decoded")
                hidden = self.model.decode_hidden(new, self.memory, self.src_keep, cache=self.cache)
            return self.model.lm_head(hidden[:, -1])  # (B, V): only the last position is needed

    def reorder(self, index: Tensor) -> None:
        """Keep rows `index` (N,): of the source, its encoding and the decoder cache.

        What depends only on the source (its encoding, mask and cross-attention keys and values) is
        copied only when some row now decodes another source than the row that held its place: beam
        search mostly permutes the hypotheses of each sentence among themselves, and copying the
        cross-attention caches at every step was a quarter of a batched beam search's time."""
        with torch.inference_mode():
            sources = self.sources.index_select(0, index)  # (N,)
            moved = not torch.equal(sources, self.sources)
            if moved:
                self.memory = self.memory.index_select(0, index)  # (N, S, D)
                self.src_keep = self.src_keep.index_select(0, index)  # (N, S)
            if self.cache is not None:
                self.cache.reorder(index, cross=moved)
            self.sources = sources


class CausalLMStepper:
    """Steps a decoder-only language model (GPT-style).

    The model is called as `model(ids (B, T), cache=cache_or_None) -> logits (B, T, V)`; with a cache,
    `ids` are the tokens after those the cache holds. `model.new_cache()` returns an empty cache: an
    object with `reorder(index)`, or a list of them (one per layer, as `attnkit.nn.Encoder.new_cache`).

    Args:
        model: the language model.
        use_cache: feed the model only the new tokens of each step; False recomputes the whole context.
        max_len: the longest context the model takes (its positions); the model then sees only the last
            `max_len` tokens (a sliding window). Absolute positions cannot slide inside a cache, so once
            the context outgrows the window the cache is rebuilt from the last `max_len` tokens, at every
            step from then on, which makes the cached path compute exactly what the uncached one does.
        compile: run one-token steps through `torch.compile` on fixed-size caches
            (`model.new_cache(capacity)`, e.g. `attnkit.nn.StaticKVCache`s of `max_len` positions, or
            of `model.config.max_len` without one), so that every step has the same shapes and one
            graph serves them all. Far fewer operators run per step, and a one-row product becomes
            one pass over the weight (`attnkit.nn.packed`); the first compiled step of a model and
            batch size takes a while (tens of seconds on a CPU). The prompt and rebuilt windows run
            uncompiled, and so do steps of several rows on a model with packed layers (the packed
            products are faster there than what a compiled graph calls).
    """

    def __init__(
        self, model: nn.Module, *, use_cache: bool = True, max_len: int | None = None, compile: bool = False
    ) -> None:
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.capacity: int | None = None  # of the fixed-size caches when compiling
        if compile:
            if not use_cache:
                raise ValueError("compile=True steps on the KV cache: it needs use_cache=True")
            self.capacity = max_len if max_len is not None else getattr(getattr(model, "config", None), "max_len", None)
            if self.capacity is None:
                raise ValueError("compile=True needs max_len: the fixed-size caches' capacity")
        self.model, self.use_cache, self.max_len = model, use_cache, max_len
        self._modules = list(model.modules())
        self._packed = any(isinstance(m, PackedLinear) for m in self._modules)
        self._static = False  # whether the current cache is a fixed-size one, stepped compiled
        self.cache: Any = None
        self._seen = 0  # tokens per row consumed so far
        self._held = 0  # positions the cache holds

    def step(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) -> logits (B, V) of the next token."""
        window = tokens if self.max_len is None else tokens[:, -self.max_len :]  # (B, ≤ max_len)
        with _evaluating(self._modules):
            if not self.use_cache:
                return self.model(window, cache=None)[:, -1]  # (B, V)
            new = tokens.size(1) - self._seen
            if new <= 0:
                raise ValueError(f"step got {tokens.size(1)} tokens, all of them already decoded")
            if self.max_len is None and self.capacity is not None and self._held + new > self.capacity:
                raise ValueError(
                    f"{self._held + new} positions exceed the cache's {self.capacity}; pass max_len to slide the window"
                )
            if self.cache is None or (self.max_len is not None and self._held + new > self.max_len):
                # A compiled graph multiplies several rows with the plain matrix kernel, slower than the
                # packed layers of a model `to_precision` prepared (`attnkit.nn.packed`): with those,
                # only one-row decoding compiles, and several rows step uncompiled on a growing cache.
                self._static = self.capacity is not None and (window.size(0) == 1 or not self._packed)
                self.cache, self._held, context = self._new_cache(), 0, window
            else:
                context = tokens[:, self._seen :]  # (B, T_new)
            # Compiled: one-token steps on a fixed-size cache that holds something (its buffers exist).
            compiled = self._static and self._held > 0 and context.size(1) == 1
            logits = (_compiled_forward() if compiled else _forward)(self.model, context, self.cache)  # (B, T, V)
        self._held += context.size(1)
        self._seen = tokens.size(1)
        return logits[:, -1]  # (B, V)

    def _new_cache(self) -> Any:
        return self.model.new_cache(self.capacity) if self._static else self.model.new_cache()

    def reorder(self, index: Tensor) -> None:
        """Keep rows `index` (N,) of the cache."""
        if self.cache is None:
            return
        with torch.inference_mode():
            if hasattr(self.cache, "reorder"):
                self.cache.reorder(index)
            else:
                for layer_cache in self.cache:
                    layer_cache.reorder(index)


def _forward(model: nn.Module, ids: Tensor, cache: Any) -> Tensor:
    """model(ids, cache=cache): a language model's step, as a function that `torch.compile` can take."""
    return model(ids, cache=cache)


@functools.cache
def _compiled_forward() -> Callable[[nn.Module, Tensor, Any], Tensor]:
    """`_forward` compiled, made once per process (on first use: importing torch's compiler takes
    a second) and shared by every stepper, so a model's graph is built once, not per search.

    Inductor's C++ wrapper calls the step's kernels without going back to Python between them, which
    shortens a small decoding step (`make bench-lm` times compiled generation). Shapes start static;
    a second batch size (rows that end early leave the batch) makes the batch dimension dynamic, so
    at most two graphs are built for one model and cache capacity."""
    return torch.compile(_forward, options={"cpp_wrapper": True})


def has_cpp_compiler() -> bool:
    """Whether torch.compile finds the C++ compiler its CPU kernels need (`g++`, or what `CXX` or
    Inductor's `cpp.cxx` setting names), so that a missing one is one clear error, not a traceback
    from deep inside the compiler."""
    from torch._inductor import cpp_builder, exc

    try:
        cpp_builder.get_cpp_compiler()
    except (exc.InvalidCxxCompiler, OSError):
        return False
    return True


# ---------------------------------------------------------------- helpers shared by the searches


Penalty = Literal["gnmt", "length"]


def length_penalty(length: int | Tensor, alpha: float, kind: Penalty = "gnmt") -> float | Tensor:
    """GNMT's lp(Y) = ((5 + |Y|) / 6)^α (Wu et al. 2016, eq. 14), or with `kind` "length" |Y|^α (what
    transformers' beam search divides by, its `length_penalty` being α); |Y| counts the eos when there
    is one. Both grow with |Y| for α >= 0, which the beam search's stopping bound needs."""
    if kind == "length":
        return length**alpha
    return ((5 + length) / 6) ** alpha


def _start_tokens(start: Tensor) -> Tensor:
    """(B,) or (B, T0) integer start tokens -> (B, T0)."""
    if start.is_floating_point() or start.is_complex() or start.dtype == torch.bool:
        raise TypeError(f"start tokens must be integer ids, got {start.dtype}")
    if start.dim() == 1:
        start = start[:, None]
    if start.dim() != 2 or start.size(1) == 0:
        raise ValueError(f"start tokens must be (B,) or (B, T0) with T0 >= 1, got shape {tuple(start.shape)}")
    return start.long()


def _limits(max_new_tokens: int | Tensor, batch: int, device: torch.device) -> Tensor:
    """max_new_tokens as a (B,) long tensor on `device`."""
    limits = torch.as_tensor(max_new_tokens, dtype=torch.long, device=device)
    if limits.dim() == 0:
        limits = limits.expand(batch)
    if limits.shape != (batch,):
        raise ValueError(f"max_new_tokens must be an int or have shape ({batch},), got {tuple(limits.shape)}")
    if (limits < 0).any():
        raise ValueError("max_new_tokens must be >= 0")
    return limits


def _check_pad(pad_id: int | None, eos_id: int | None, max_new_tokens: int | Tensor) -> None:
    """Rows that end early need a padding id to fill their tail."""
    if pad_id is None and (eos_id is not None or isinstance(max_new_tokens, Tensor)):
        raise ValueError("rows can end early (eos_id or per-row max_new_tokens): pass pad_id to fill them")


def _suppress_pad(logits: Tensor, pad_id: int | None, eos_id: int | None = None, *, inplace: bool = False) -> Tensor:
    """logits (N, V) with the padding token made impossible, and `eos_id` too when given (a row
    shorter than its `min_new_tokens`); `inplace` writes into `logits` (a tensor the caller owns)."""
    banned = [token for token in (pad_id, eos_id) if token is not None]
    if not banned:
        return logits
    fill = logits.index_fill_ if inplace else logits.index_fill
    return fill(-1, torch.tensor(banned, device=logits.device), float("-inf"))


def _check_min(min_new_tokens: int) -> None:
    if min_new_tokens < 0:
        raise ValueError(f"min_new_tokens must be >= 0, got {min_new_tokens}")


def _decode_rows(
    stepper: Stepper,
    start: Tensor,
    max_new_tokens: int | Tensor,
    choose: Callable[[Tensor], Tensor],
    eos_id: int | None,
    pad_id: int | None,
    min_new_tokens: int = 0,
) -> Tensor:
    """One token per row and step, picked by `choose(logits (N, V)) -> (N,)`; the loop of greedy and sampling.
    eos cannot be chosen before `min_new_tokens` tokens.

    The rows still decoding live in one preallocated buffer (N, T0 + steps): each step writes one
    column and hands the stepper a view, so no step copies the whole prefix.
    """
    tokens = _start_tokens(start)  # (B, T0)
    batch, prompt, device = tokens.size(0), tokens.size(1), tokens.device
    limits = _limits(max_new_tokens, batch, device)  # (B,)
    steps = int(limits.max()) if batch else 0
    out = tokens.new_full((batch, steps), 0 if pad_id is None else pad_id)  # (B, steps)
    rows = torch.arange(batch, device=device)[limits > 0]  # (N,) the batch row of each unfinished row
    if rows.numel() < batch:
        stepper.reorder(rows)
        tokens = tokens[rows]
    live = tokens.new_empty((rows.numel(), prompt + steps))  # (N, T0 + steps)
    live[:, :prompt] = tokens
    # Without an eos and with one limit for all, no row ends before the last step.
    all_to_the_end = eos_id is None and bool((limits[rows] == steps).all())
    width = 0
    for t in range(steps):
        if rows.numel() == 0:
            break
        logits = _suppress_pad(stepper.step(live[:, : prompt + t]), pad_id, eos_id if t < min_new_tokens else None)
        live[:, prompt + t] = choose(logits)  # (N,)
        width = t + 1
        if all_to_the_end:
            continue
        chosen = live[:, prompt + t]
        ended = limits[rows] <= t + 1  # (N,)
        if eos_id is not None:
            ended |= chosen == eos_id
        if ended.any():
            out[rows[ended], :width] = live[ended, prompt : prompt + width]
            keep = (~ended).nonzero().squeeze(1)  # (N',)
            rows, live = rows[keep], live[keep]
            if keep.numel():
                stepper.reorder(keep)
    out[rows, :width] = live[:, prompt : prompt + width]
    return out[:, :width]


# ---------------------------------------------------------------- the searches


@torch.inference_mode()
def greedy_decode(
    stepper: Stepper,
    start: Tensor,
    *,
    eos_id: int | None,
    max_new_tokens: int | Tensor,
    pad_id: int | None = 0,
    min_new_tokens: int = 0,
) -> Tensor:
    """Pick the most probable next token at every step, for a batch of rows at once.

    Args:
        stepper: the model to decode from, e.g. `Seq2SeqStepper(model, src_ids)`.
        start: (B,) or (B, T0) tokens each row starts from (BOS, or a prompt).
        eos_id: the token that ends a row; None = rows run to `max_new_tokens`.
        max_new_tokens: most tokens generated per row; int or (B,).
        pad_id: fills rows after their end and is never generated; None only when no row can end early.
        min_new_tokens: eos is not generated before this many tokens (CTranslate2's
            min_decoding_length, transformers' min_new_tokens).

    Returns:
        (B, T) generated tokens, eos included, T the longest row's length.
    """
    _check_pad(pad_id, eos_id, max_new_tokens)
    _check_min(min_new_tokens)
    argmax = lambda logits: logits.argmax(dim=-1)  # noqa: E731
    return _decode_rows(stepper, start, max_new_tokens, argmax, eos_id, pad_id, min_new_tokens)


class BeamSearchResult(NamedTuple):
    """The best hypothesis per row.

    tokens: (B, T) generated tokens, eos included, padded with `pad_id`; T the longest hypothesis.
    scores: (B,) their log-probability divided by the length penalty (0 for rows allowed no token).
    """

    tokens: Tensor
    scores: Tensor


@torch.inference_mode()
def beam_search(
    stepper: Stepper,
    start: Tensor,
    *,
    eos_id: int | None,
    max_new_tokens: int | Tensor,
    beam_size: int = 4,
    alpha: float = 0.6,
    pad_id: int | None = 0,
    penalty: Penalty = "gnmt",
    min_new_tokens: int = 0,
) -> BeamSearchResult:
    """Keep the `beam_size` most probable prefixes per row; return the best finished hypothesis.

    At each step the 2K best one-token extensions of a row's K live prefixes are ranked by cumulative
    log-probability (K = beam_size). An extension by eos among the first K finishes a hypothesis, scored
    log P(Y) / lp(Y) (`length_penalty`); the first K extensions that are not eos live on. When a row
    reaches its `max_new_tokens`, its K best extensions all finish.

    Stopping rule: a row ends when no live prefix can beat its best finished hypothesis, or at its
    length limit. Log-probabilities only fall as a prefix grows and lp only grows with length, so
    log P(prefix) / lp(max_new_tokens) bounds every score a live prefix can still reach (α >= 0); the
    row ends once its best finished score is at least that bound for its best live prefix. How many
    hypotheses have finished plays no part: when the model is sure of its next token, eos extensions
    of the best prefix rank among the K best with hopeless scores, and ending a row after K of them
    (fairseq's rule) returns truncated output. The result is the best-scoring hypothesis finished in
    the search. With K = 1 and α = 0 this is greedy search; with α > 0 a single beam may still go on
    past an eos that greedy search would stop at, when the length penalty can lift a longer hypothesis.

    Args:
        stepper: the model to decode from; its rows are expanded to B × K.
        start: (B,) or (B, T0) tokens each row starts from.
        eos_id: the token that ends a hypothesis; None = hypotheses run to `max_new_tokens`.
        max_new_tokens: most tokens per hypothesis; int or (B,) (the paper: source length + 50).
        beam_size: K (the paper: 4).
        alpha: length penalty exponent α >= 0 (the paper: 0.6; 0 = plain log-probability).
        pad_id: fills hypotheses after their end and is never generated; None only when no row can end early.
        penalty: the form of lp, "gnmt" or "length" (`length_penalty`).
        min_new_tokens: no hypothesis finishes by eos before this many tokens.

    Returns:
        `BeamSearchResult(tokens (B, T), scores (B,))`.
    """
    _check_min(min_new_tokens)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0 (the search's stopping bound relies on it), got {alpha}")
    _check_pad(pad_id, eos_id, max_new_tokens)
    tokens = _start_tokens(start)  # (B, T0)
    batch, start_len, device = *tokens.shape, tokens.device
    beams = beam_size
    limits = _limits(max_new_tokens, batch, device)  # (B,)
    steps = int(limits.max()) if batch else 0
    best_tokens = tokens.new_full((batch, steps), 0 if pad_id is None else pad_id)  # (B, steps)
    best_lengths = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
    # A row allowed no token ends with the empty hypothesis, of log-probability 0.
    best_scores = torch.zeros(batch, device=device).masked_fill(limits > 0, float("-inf"))  # (B,)

    rows = torch.arange(batch, device=device)[limits > 0]  # (N,) the batch row of each row still searching
    index = rows.repeat_interleave(beams)  # (N*K,)
    stepper.reorder(index)
    tokens = tokens[index]  # (N*K, T0)
    # The K copies of a start are one prefix: only the first is live, or the beam would fill with duplicates.
    scores = torch.full((rows.numel(), beams), float("-inf"), device=device)  # (N, K) cumulative log-probs
    scores[:, 0] = 0.0
    for t in range(steps):
        if rows.numel() == 0:
            break
        n_rows, length = rows.numel(), t + 1
        logits = stepper.step(tokens)  # (N*K, V)
        if logits.dtype.itemsize < 4:
            logits = logits.float()
        early_eos = eos_id if t < min_new_tokens else None
        # In place on the fresh log-probabilities: at N*K rows of a large vocabulary each full-size copy
        # is a pass over megabytes, per step.
        log_probs = _suppress_pad(logits.log_softmax(dim=-1), pad_id, early_eos, inplace=True)  # (N*K, V)
        scores, best_scores = scores.to(log_probs.dtype), best_scores.to(log_probs.dtype)
        vocab = log_probs.size(-1)
        candidates = log_probs.view(n_rows, beams, vocab).add_(scores[:, :, None]).view(n_rows, beams * vocab)
        top_scores, top_index = candidates.topk(min(2 * beams, beams * vocab), dim=1)  # (N, 2K)
        top_beam, top_token = top_index // vocab, top_index % vocab  # (N, 2K)
        is_eos = top_token == eos_id if eos_id is not None else torch.zeros_like(top_token, dtype=torch.bool)
        at_limit = limits[rows] <= length  # (N,)

        # Finish: an eos among the K best extensions, or all K best when the row is at its limit.
        finish = (is_eos | at_limit[:, None]) & (top_scores > float("-inf"))  # (N, 2K)
        finish[:, beams:] = False
        penalised = (top_scores / length_penalty(length, alpha, penalty)).masked_fill(~finish, float("-inf"))  # (N, 2K)
        step_best, step_pos = penalised.max(dim=1)  # (N,)
        # Strictly better only: on a tie the shorter hypothesis, finished earlier, stays.
        better = (step_best > best_scores[rows]).nonzero().squeeze(1)  # (R,)
        if better.numel():
            pos = step_pos[better]  # (R,)
            prefix = tokens.view(n_rows, beams, -1)[better, top_beam[better, pos], start_len:]  # (R, t)
            hypothesis = torch.cat([prefix, top_token[better, pos][:, None]], dim=1)  # (R, t + 1)
            # Hypotheses finish in order of length, so what lies beyond `length` is still padding.
            best_tokens[rows[better], :length] = hypothesis
            best_lengths[rows[better]] = length
            best_scores[rows[better]] = step_best[better]

        # Live on: the K best extensions that are not eos.
        live_scores, live_pos = top_scores.masked_fill(is_eos, float("-inf")).topk(beams, dim=1)  # (N, K)
        live_beam, live_token = top_beam.gather(1, live_pos), top_token.gather(1, live_pos)  # (N, K)
        reachable = live_scores[:, 0] / length_penalty(limits[rows], alpha, penalty)  # (N,) bound on any live prefix
        done = at_limit | (best_scores[rows] >= reachable)  # (N,)
        keep = (~done).nonzero().squeeze(1)  # (N',)
        if keep.numel() == 0:
            break
        index = (keep[:, None] * beams + live_beam[keep]).view(-1)  # (N'*K,) rows of `tokens` that live on
        stepper.reorder(index)
        tokens = torch.cat([tokens[index], live_token[keep].view(-1, 1)], dim=1)  # (N'*K, T0 + t + 1)
        scores, rows = live_scores[keep], rows[keep]
    width = int(best_lengths.max()) if batch else 0
    return BeamSearchResult(best_tokens[:, :width], best_scores)


@torch.inference_mode()
def sample(
    stepper: Stepper,
    start: Tensor,
    *,
    max_new_tokens: int | Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
) -> Tensor:
    """Draw each next token from the model's distribution, reshaped by temperature, top-k and top-p.

    The logits are divided by the temperature, then filtered by top-k, then by top-p, then sampled.

    Args:
        stepper: the model to sample from, e.g. `CausalLMStepper(model)`.
        start: (B,) or (B, T0) tokens each row starts from (a prompt).
        max_new_tokens: most tokens generated per row; int or (B,).
        temperature: > 0 sharpens (< 1) or flattens (> 1) the distribution; 0 = greedy (argmax).
        top_k: sample among the k most probable tokens only (`top_k_filter`).
        top_p: sample among the smallest set of most probable tokens whose probability reaches p
            (`top_p_filter`).
        generator: random source, for reproducible samples (on the logits' device).
        eos_id: the token that ends a row; None = rows run to `max_new_tokens`.
        pad_id: fills rows after their end and is never sampled; required when rows can end early.

    Returns:
        (B, T) generated tokens, eos included, T the longest row's length.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    _check_pad(pad_id, eos_id, max_new_tokens)

    def choose(logits: Tensor) -> Tensor:
        if temperature == 0:
            return logits.argmax(dim=-1)  # (N,)
        logits = logits.float() / temperature  # (N, V)
        if top_k is not None:
            logits = top_k_filter(logits, top_k)
        if top_p is not None:
            logits = top_p_filter(logits, top_p)
        return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)  # (N,)

    return _decode_rows(stepper, start, max_new_tokens, choose, eos_id, pad_id)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Set every logit below the k-th largest to -inf (ties with the k-th are kept).

    Args:
        logits: (..., V).
        k: tokens to keep, >= 1; k >= V keeps all.

    Returns:
        a filtered copy (..., V).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= logits.size(-1):
        return logits.clone()
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2019): keep the smallest set of most probable tokens whose
    probability sums to at least p; set the other logits to -inf. The most probable token is always kept.

    Args:
        logits: (..., V).
        p: in (0, 1]; 1 keeps all.

    Returns:
        a filtered copy (..., V).
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p must be in (0, 1], got {p}")
    if p == 1.0:
        return logits.clone()
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., V)
    probs = sorted_logits.float().softmax(dim=-1)  # (..., V)
    before = probs.cumsum(dim=-1) - probs  # (..., V) probability of the more probable tokens
    drop_sorted = before >= p  # (..., V); the first token has 0 before it, and p > 0
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))
