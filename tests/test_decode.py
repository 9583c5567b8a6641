"""Decoding: greedy, beam search and sampling against hand-made distributions, exhaustive search,
the uncached path, and each row decoded alone."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

from attnkit.decode import (
    CausalLMStepper,
    Seq2SeqStepper,
    beam_search,
    greedy_decode,
    length_penalty,
    sample,
    top_k_filter,
    top_p_filter,
)
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.nn import Encoder, LearnedPositionalEmbedding, Transformer, TransformerConfig

PAD, BOS, EOS = 0, 1, 2
NEG = float("-inf")


# ---------------------------------------------------------------- models and steppers


def tiny_transformer(vocab: int = 20, seed: int = 0, **overrides) -> Transformer:
    """A random float64 Transformer; dropout on, to show decoding switches it off."""
    torch.manual_seed(seed)
    fields = dict(
        src_vocab_size=vocab,
        d_model=16,
        n_heads=2,
        n_encoder_layers=2,
        n_decoder_layers=2,
        d_ff=32,
        dropout=0.1,
        max_len=64,
        tie_embeddings=False,
    )
    fields.update(overrides)
    model = Transformer(TransformerConfig(**fields)).double()
    return model


def sources(lengths: list[int], vocab: int = 20, seed: int = 1) -> Tensor:
    """(B, max(lengths)) random source ids, right-padded with PAD."""
    generator = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (len(lengths), max(lengths)), generator=generator)
    for row, length in enumerate(lengths):
        src[row, length:] = PAD
    return src


class TinyCausalLM(nn.Module):
    """A throwaway GPT: embeddings, learned positions, causal `Encoder` layers, a linear head."""

    def __init__(self, vocab: int = 23, max_len: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.pos = LearnedPositionalEmbedding(max_len, 16)
        self.blocks = Encoder(16, 2, 32, 2, dropout=0.1, norm_first=True)
        self.lm_head = nn.Linear(16, vocab)

    def forward(self, ids: Tensor, cache: list | None = None) -> Tensor:
        offset = 0 if cache is None else cache[0].offset
        x = self.pos(self.embed(ids), offset)  # (B, T, D)
        return self.lm_head(self.blocks(x, causal=True, cache=cache))  # (B, T, V)

    def new_cache(self, capacity: int | None = None) -> list:
        return self.blocks.new_cache(capacity)


def tiny_lm(seed: int = 0, max_len: int = 8) -> TinyCausalLM:
    torch.manual_seed(seed)
    return TinyCausalLM(max_len=max_len).double()


class TableStepper:
    """Next-token probabilities looked up by the whole row so far; uniform over non-pad tokens otherwise.

    Stateless, so `reorder` only records the batch sizes the search asks for.
    """

    def __init__(self, table: dict[tuple[int, ...], dict[int, float]], vocab: int = 6) -> None:
        self.table, self.vocab = table, vocab
        self.batch_sizes: list[int] = []

    def step(self, tokens: Tensor) -> Tensor:
        self.batch_sizes.append(tokens.size(0))
        rows = []
        for row in tokens.tolist():
            probs = self.table.get(tuple(row), {t: 1.0 for t in range(1, self.vocab)})
            rows.append([math.log(probs[t]) if probs.get(t, 0.0) > 0 else NEG for t in range(self.vocab)])
        return torch.tensor(rows, dtype=torch.float64)  # (N, V)

    def reorder(self, index: Tensor) -> None:
        pass


class FixedStepper:
    """The same logits (V,) for every row and step."""

    def __init__(self, logits: Tensor) -> None:
        self.logits = logits

    def step(self, tokens: Tensor) -> Tensor:
        return self.logits.expand(tokens.size(0), -1)

    def reorder(self, index: Tensor) -> None:
        pass


class RecordingStepper:
    """Passes through to another stepper, keeping each step's logits and row count."""

    def __init__(self, inner) -> None:
        self.inner, self.logits = inner, []

    def step(self, tokens: Tensor) -> Tensor:
        logits = self.inner.step(tokens)
        self.logits.append(logits)
        return logits

    def reorder(self, index: Tensor) -> None:
        self.inner.reorder(index)


def eos_that_ends_some_rows(model: Transformer, src: Tensor) -> int:
    """A token that, taken as eos, ends greedy search's rows at the most different steps."""
    tokens = greedy_decode(Seq2SeqStepper(model, src), torch.full((src.size(0),), BOS), eos_id=None, max_new_tokens=8)

    def end_steps(token: int) -> int:
        return len({row.index(token) if token in row else None for row in tokens.tolist()})

    return max(sorted(set(tokens.flatten().tolist())), key=end_steps)


def sequence_score(model: Transformer, src: Tensor, hypothesis: list[int], alpha: float) -> float:
    """log P(hypothesis | src) / lp, by one teacher-forced pass (no cache, no search)."""
    model.eval()
    with torch.no_grad():
        tgt_in = torch.tensor([[BOS, *hypothesis[:-1]]])
        log_probs = model(src[None], tgt_in).log_softmax(dim=-1)[0]  # (T, V)
    total = sum(log_probs[i, token].item() for i, token in enumerate(hypothesis))
    return total / length_penalty(len(hypothesis), alpha)


def unpad(row: Tensor, eos_id: int | None) -> list[int]:
    """A generated row up to and including its eos (or without the padding after its last token)."""
    tokens = row.tolist()
    if eos_id in tokens:
        return tokens[: tokens.index(eos_id) + 1]
    while tokens and tokens[-1] == PAD:
        tokens.pop()
    return tokens


# ---------------------------------------------------------------- filters


def test_top_k_filter_hand_computed():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.5, -1.0, 4.0, 2.5]])
    expected = torch.tensor([[NEG, 3.0, 2.0, NEG], [NEG, NEG, 4.0, 2.5]])
    assert torch.equal(top_k_filter(logits, 2), expected)
    assert torch.equal(top_k_filter(logits, 4), logits)
    assert torch.equal(top_k_filter(torch.tensor([1.0, 1.0, 0.0]), 1), torch.tensor([1.0, 1.0, NEG]))  # ties kept
    assert torch.equal(logits, torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.5, -1.0, 4.0, 2.5]]))  # input untouched
    with pytest.raises(ValueError, match="k must be"):
        top_k_filter(logits, 0)


@pytest.mark.parametrize(
    ("p", "kept"),
    [(0.4, [1]), (0.75, [1, 3]), (0.85, [0, 1, 3]), (0.99, [0, 1, 2, 3]), (1.0, [0, 1, 2, 3])],
)
def test_top_p_filter_hand_computed(p, kept):
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])  # sorted: 0.5, 0.3, 0.15, 0.05; running sums 0.5, 0.8, 0.95, 1
    logits = torch.stack([probs.log(), probs.log() + 3.0])  # shifting logits changes no probability
    expected = torch.full_like(logits, NEG)
    expected[:, kept] = logits[:, kept]
    assert torch.equal(top_p_filter(logits, p), expected)
    # Four equal probabilities of exactly 1/4: p = 1/2 is reached by two tokens, not three.
    assert (top_p_filter(torch.zeros(4), 0.5) > NEG).sum() == 2
    with pytest.raises(ValueError, match="p must be"):
        top_p_filter(logits, 0.0)


# ---------------------------------------------------------------- greedy and beam search on hand-made distributions

A, B_ = 3, 4
# From BOS, greedy takes A (0.5), then A (0.4), then eos: 0.5 · 0.4 · 0.4 = 0.08; B then eos has 0.4 · 0.9 = 0.36.
TABLE = {
    (BOS,): {A: 0.5, B_: 0.4, EOS: 0.1},
    (BOS, A): {A: 0.4, B_: 0.3, EOS: 0.3},
    (BOS, A, A): {EOS: 0.4, A: 0.3, B_: 0.3},
    (BOS, B_): {EOS: 0.9, A: 0.05, B_: 0.05},
    (5,): {EOS: 0.7, A: 0.3},
}


def test_greedy_ends_rows_at_eos_pads_after_and_stops_decoding_them():
    stepper = TableStepper(TABLE)
    out = greedy_decode(stepper, torch.tensor([BOS, 5]), eos_id=EOS, max_new_tokens=5)
    assert out.tolist() == [[A, A, EOS], [EOS, PAD, PAD]]
    assert stepper.batch_sizes == [2, 1, 1]  # row 1 ended at the first step and was dropped


def test_greedy_respects_max_new_tokens_per_row():
    out = greedy_decode(
        TableStepper(TABLE), torch.tensor([BOS, BOS, BOS]), eos_id=EOS, max_new_tokens=torch.tensor([1, 2, 0])
    )
    assert out.tolist() == [[A, PAD], [A, A], [PAD, PAD]]
    assert greedy_decode(TableStepper(TABLE), torch.tensor([BOS]), eos_id=EOS, max_new_tokens=0).shape == (1, 0)


def test_beam_search_finds_what_greedy_misses():
    start = torch.tensor([BOS])
    greedy = greedy_decode(TableStepper(TABLE), start, eos_id=EOS, max_new_tokens=3)
    stepper = TableStepper(TABLE)
    result = beam_search(stepper, start, eos_id=EOS, max_new_tokens=3, beam_size=2, alpha=0.0)
    assert greedy.tolist() == [[A, A, EOS]]
    # After two steps the finished B eos (0.36) beats anything the live prefixes (A A: 0.2) can reach.
    assert stepper.batch_sizes == [2, 2]
    assert result.tokens.tolist() == [[B_, EOS]]
    assert result.scores.item() == pytest.approx(math.log(0.36))
    # With a length penalty the same hypothesis wins, scored log P / lp(2).
    penalised = beam_search(TableStepper(TABLE), start, eos_id=EOS, max_new_tokens=3, beam_size=2, alpha=0.6)
    assert penalised.scores.item() == pytest.approx(math.log(0.36) / ((5 + 2) / 6) ** 0.6)


# From 7: eos at once scores log 0.5 = -0.69; A then eos, log 0.4275 / lp(2) = -0.62 with α = 2.
LONGER_WINS = {(7,): {EOS: 0.5, A: 0.45, B_: 0.05}, (7, A): {EOS: 0.95, A: 0.05}}


def test_beam_search_goes_on_while_a_longer_hypothesis_can_still_win():
    """After the first step the live prefix A (log 0.45 = -0.80) is below the finished [eos] (-0.69), yet
    the length penalty can lift it by up to lp(3) = (8/6)^2, so the search must not stop there."""
    start = torch.tensor([7])
    result = beam_search(TableStepper(LONGER_WINS), start, eos_id=EOS, max_new_tokens=3, beam_size=2, alpha=2.0)
    assert result.tokens.tolist() == [[A, EOS]]
    assert result.scores.item() == pytest.approx(math.log(0.45 * 0.95) / (7 / 6) ** 2)
    # One beam goes on past the eos greedy search stops at, and finds the same hypothesis.
    one = beam_search(TableStepper(LONGER_WINS), start, eos_id=EOS, max_new_tokens=3, beam_size=1, alpha=2.0)
    assert one.tokens.tolist() == [[A, EOS]]
    # Without a length penalty nothing can beat the finished [eos]: one beam is greedy search.
    plain = beam_search(TableStepper(LONGER_WINS), start, eos_id=EOS, max_new_tokens=3, beam_size=1, alpha=0.0)
    greedy = greedy_decode(TableStepper(LONGER_WINS), start, eos_id=EOS, max_new_tokens=3)
    assert plain.tokens.tolist() == greedy.tolist() == [[EOS]]


class ConfidentStepper:
    """A model sure of one output per start token: `targets[start]` then eos, each next token with
    probability 0.9. Eos is the likeliest of the other tokens (0.04, the rest share 0.06), so eos
    extensions of the best prefix rank second at every step, with hopeless scores. Off the target,
    every non-pad token is equally likely."""

    def __init__(self, targets: dict[int, list[int]], vocab: int = 12) -> None:
        self.targets, self.vocab = targets, vocab

    def distribution(self, row: list[int]) -> list[float]:
        """Next-token probabilities (V,) after `row` (start token first)."""
        target = [*self.targets[row[0]], EOS]
        so_far = row[1:]
        others = [t for t in range(1, self.vocab) if t != EOS]
        if so_far != target[: len(so_far)] or len(so_far) >= len(target):
            return [0.0] + [1.0 / (self.vocab - 1)] * (self.vocab - 1)
        sure = target[len(so_far)]
        probs = [0.0] * self.vocab
        rest = [t for t in others if t != sure]
        for t in rest:
            probs[t] = 0.06 / len(rest)
        probs[EOS] = 0.04 if sure != EOS else 0.9
        probs[sure] = 0.9
        if sure == EOS:
            for t in rest:
                probs[t] = 0.1 / len(rest)
        return probs

    def step(self, tokens: Tensor) -> Tensor:
        rows = [[math.log(p) if p > 0 else NEG for p in self.distribution(row)] for row in tokens.tolist()]
        return torch.tensor(rows, dtype=torch.float64)  # (N, V)

    def reorder(self, index: Tensor) -> None:
        pass

    def score(self, start: int, hypothesis: list[int], alpha: float) -> float:
        """log P(hypothesis) / lp, teacher-forced through `distribution`."""
        row, total = [start], 0.0
        for token in hypothesis:
            total += math.log(self.distribution(row)[token])
            row.append(token)
        return total / length_penalty(len(hypothesis), alpha)


CONFIDENT_TARGETS = {
    3: [5, 9, 4, 9, 8, 10, 11, 6, 3, 7, 5],
    4: [11, 6, 10, 3, 5, 8, 4, 9, 7, 6],
    5: [7, 7, 3, 11, 10, 4, 6, 8, 5, 9, 10, 3],
}


@pytest.mark.parametrize("beam_size", [2, 4, 8])
@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_search_on_a_confident_model_returns_greedy_output(beam_size, alpha):
    """Hopeless eos extensions finish a hypothesis at every step; they must not end the search while a
    live prefix scores far better (the search used to end a row after K finished hypotheses)."""
    stepper, start = ConfidentStepper(CONFIDENT_TARGETS), torch.tensor(sorted(CONFIDENT_TARGETS))
    greedy = greedy_decode(stepper, start, eos_id=EOS, max_new_tokens=20)
    result = beam_search(stepper, start, eos_id=EOS, max_new_tokens=20, beam_size=beam_size, alpha=alpha)
    assert torch.equal(result.tokens, greedy)
    for row, first in enumerate(start.tolist()):
        assert unpad(greedy[row], EOS) == [*CONFIDENT_TARGETS[first], EOS]
        expected = stepper.score(first, unpad(result.tokens[row], EOS), alpha)
        assert result.scores[row].item() == pytest.approx(expected, abs=1e-9)


class RandomTableStepper:
    """Random next-token distributions, one per prefix, drawn from a generator seeded by the prefix:
    sharp or flat at random, so the best hypothesis is sometimes long, sometimes short."""

    def __init__(self, seed: int, vocab: int = 4) -> None:
        self.seed, self.vocab = seed, vocab

    def log_probs(self, row: list[int]) -> Tensor:
        key = self.seed * 1_000_003 + sum((t + 1) * 7**i for i, t in enumerate(row))
        generator = torch.Generator().manual_seed(key)
        sharpness = 4.0 * torch.rand((), generator=generator, dtype=torch.float64)
        logits = sharpness * torch.randn(self.vocab, generator=generator, dtype=torch.float64)
        logits[PAD] = NEG
        return logits.log_softmax(dim=-1)  # (V,)

    def step(self, tokens: Tensor) -> Tensor:
        return torch.stack([self.log_probs(row) for row in tokens.tolist()])  # (N, V)

    def reorder(self, index: Tensor) -> None:
        pass

    def score(self, start: int, hypothesis: list[int], alpha: float, penalty: str = "gnmt") -> float:
        row, total = [start], 0.0
        for token in hypothesis:
            total += self.log_probs(row)[token].item()
            row.append(token)
        return total / length_penalty(len(hypothesis), alpha, penalty)


@pytest.mark.parametrize("penalty", ["gnmt", "length"])
@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, 2.0])
def test_beam_search_wider_than_every_prefix_is_exhaustive(alpha, penalty):
    """Vocabulary {pad, eos, 2, 3}, at most 4 tokens: at most 8 live prefixes and 24 extensions per step,
    so a beam of 24 ranks every extension among its first K and prunes nothing; it must return the best
    of all 31 hypotheses under the length-penalised score, with that score."""
    eos, words, limit = 1, [2, 3], 4
    hypotheses = [[*ws, eos] for n in range(limit) for ws in itertools.product(words, repeat=n)]
    hypotheses += [list(ws) for ws in itertools.product(words, repeat=limit)]
    assert len(hypotheses) == 31
    for seed in range(12):
        stepper = RandomTableStepper(seed)
        start = torch.tensor([2, 3])
        result = beam_search(
            stepper, start, eos_id=eos, max_new_tokens=limit, beam_size=24, alpha=alpha, penalty=penalty
        )
        for row, first in enumerate(start.tolist()):
            scores = {tuple(h): stepper.score(first, h, alpha, penalty) for h in hypotheses}
            best = max(scores, key=scores.get)
            assert unpad(result.tokens[row], eos) == list(best), (seed, row)
            assert result.scores[row].item() == pytest.approx(scores[best], abs=1e-9)


def test_beam_size_one_is_greedy_on_hand_made_distributions():
    start = torch.tensor([BOS, 5])
    greedy = greedy_decode(TableStepper(TABLE), start, eos_id=EOS, max_new_tokens=4)
    result = beam_search(TableStepper(TABLE), start, eos_id=EOS, max_new_tokens=4, beam_size=1, alpha=0.0)
    assert torch.equal(result.tokens, greedy)


def test_search_arguments_are_checked():
    stepper, start = TableStepper(TABLE), torch.tensor([BOS])
    with pytest.raises(ValueError, match="pad_id"):
        greedy_decode(stepper, start, eos_id=EOS, max_new_tokens=3, pad_id=None)
    with pytest.raises(ValueError, match="alpha"):
        beam_search(stepper, start, eos_id=EOS, max_new_tokens=3, alpha=-1.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_decode(stepper, start, eos_id=EOS, max_new_tokens=torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="integer"):
        greedy_decode(stepper, start.float(), eos_id=EOS, max_new_tokens=3)


# ---------------------------------------------------------------- the Transformer: exhaustive search, cache, padding


def test_beam_search_with_a_wide_beam_finds_the_exhaustive_best():
    """Vocabulary {pad, bos, eos, 3, 4}, at most 3 tokens: 36 complete extensions at the last step, so a beam
    of 36 never prunes, and must return the best of all hypotheses under the length-penalised score."""
    model, alpha = tiny_transformer(vocab=5, seed=3, n_encoder_layers=1, n_decoder_layers=1), 0.6
    src = sources([4, 2], vocab=5, seed=4)
    result = beam_search(Seq2SeqStepper(model, src), torch.full((2,), BOS), eos_id=EOS, max_new_tokens=3, beam_size=36)
    words = [BOS, 3, 4]  # every token but pad and eos
    hypotheses = (
        [[EOS]]
        + [[w, EOS] for w in words]
        + [[*ws, z] for ws in itertools.product(words, repeat=2) for z in (*words, EOS)]
    )
    for row in range(2):
        scores = {tuple(h): sequence_score(model, src[row], h, alpha) for h in hypotheses}
        best = max(scores, key=scores.get)
        assert unpad(result.tokens[row], EOS) == list(best)
        assert result.scores[row].item() == pytest.approx(scores[best], abs=1e-9)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_cache_and_no_cache_give_the_same_tokens(search):
    model = tiny_transformer(seed=5)
    src = sources([7, 3, 5, 1], seed=6)
    eos = eos_that_ends_some_rows(model, src)
    start, limits = torch.full((4,), BOS), torch.tensor([8, 8, 5, 8])
    outs = []
    for use_cache in (True, False):
        stepper = Seq2SeqStepper(model, src, use_cache=use_cache)
        if search == "greedy":
            outs.append((greedy_decode(stepper, start, eos_id=eos, max_new_tokens=limits), None))
        else:
            outs.append(beam_search(stepper, start, eos_id=eos, max_new_tokens=limits, beam_size=3))
    (cached, cached_scores), (uncached, uncached_scores) = outs
    assert torch.equal(cached, uncached)
    if search == "beam":
        torch.testing.assert_close(cached_scores, uncached_scores)
    lengths = [len(unpad(row, eos)) for row in cached]
    assert all(n <= int(limit) for n, limit in zip(lengths, limits, strict=True))
    assert len(set(lengths)) > 1  # rows ended at different steps


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_a_batch_decodes_as_each_row_alone(search):
    model = tiny_transformer(seed=7)
    src = sources([6, 2, 4], seed=8)
    eos = eos_that_ends_some_rows(model, src)

    def decode(src_rows: Tensor) -> Tensor:
        stepper, start = Seq2SeqStepper(model, src_rows), torch.full((src_rows.size(0),), BOS)
        if search == "greedy":
            return greedy_decode(stepper, start, eos_id=eos, max_new_tokens=7)
        return beam_search(stepper, start, eos_id=eos, max_new_tokens=7).tokens

    batched = decode(src)
    for row in range(3):
        alone = decode(src[row : row + 1, : int((src[row] != PAD).sum())])  # its own length, no padding
        assert unpad(batched[row], eos) == unpad(alone[0], eos)


def test_seq2seq_reorder_copies_the_source_side_only_when_rows_change_source():
    model = tiny_transformer(seed=3)
    src = sources([5, 3], seed=4)
    tokens = torch.randint(3, 20, (4, 3), generator=torch.Generator().manual_seed(5))
    stepper = Seq2SeqStepper(model, src)
    stepper.reorder(torch.tensor([0, 0, 1, 1]))  # two hypotheses per source, as beam search starts
    stepper.step(tokens[:, :1])
    memory, cross = stepper.memory, [c.k.data_ptr() for c in stepper.cache.cross_attn]
    stepper.reorder(torch.tensor([1, 0, 3, 3]))  # hypotheses of each source among themselves: nothing copied
    assert stepper.memory is memory and [c.k.data_ptr() for c in stepper.cache.cross_attn] == cross
    stepper.step(tokens[[1, 0, 3, 3], :2])
    stepper.reorder(torch.tensor([2, 1]))  # now one row of source 1, then one of source 0
    assert stepper.memory is not memory and [c.k.data_ptr() for c in stepper.cache.cross_attn] != cross
    got = stepper.step(tokens[[3, 0], :3])
    # The same rows decoded from scratch on the reordered sources and prefixes.
    fresh = Seq2SeqStepper(model, src[[1, 0]], use_cache=False)
    torch.testing.assert_close(got, fresh.step(tokens[[3, 0], :3]))


def test_beam_size_one_is_greedy_on_a_transformer():
    model = tiny_transformer(seed=9)
    src = sources([5, 3, 6], seed=10)
    eos = eos_that_ends_some_rows(model, src)
    start = torch.full((3,), BOS)
    greedy = greedy_decode(Seq2SeqStepper(model, src), start, eos_id=eos, max_new_tokens=8)
    result = beam_search(Seq2SeqStepper(model, src), start, eos_id=eos, max_new_tokens=8, beam_size=1, alpha=0.0)
    assert torch.equal(result.tokens, greedy)
    for row in range(3):
        assert result.scores[row].item() == pytest.approx(sequence_score(model, src[row], unpad(greedy[row], eos), 0.0))


def test_decoding_is_in_eval_mode_and_restores_training():
    model = tiny_transformer(seed=11)  # dropout 0.1
    model.train()
    model.encoder.layers[0].eval()  # a module already in eval mode stays so
    src, start = sources([5, 4], seed=12), torch.full((2,), BOS)
    first = beam_search(Seq2SeqStepper(model, src), start, eos_id=None, max_new_tokens=6)
    second = beam_search(Seq2SeqStepper(model, src), start, eos_id=None, max_new_tokens=6)
    assert torch.equal(first.tokens, second.tokens)  # no dropout
    assert model.training and model.decoder.layers[1].ffn.training
    assert not model.encoder.layers[0].training and not model.encoder.layers[0].ffn.training
    assert torch.is_grad_enabled()


# ---------------------------------------------------------------- sampling


def test_sampling_is_reproducible_with_a_seed_and_temperature_zero_is_greedy():
    model = tiny_transformer(seed=13)
    src, start = sources([6, 3], seed=14), torch.full((2,), BOS)

    def draw(seed: int, **options) -> Tensor:
        generator = torch.Generator().manual_seed(seed)
        return sample(Seq2SeqStepper(model, src), start, max_new_tokens=10, generator=generator, pad_id=PAD, **options)

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0, temperature=5.0), draw(1, temperature=5.0))
    greedy = greedy_decode(Seq2SeqStepper(model, src), start, eos_id=None, max_new_tokens=10)
    assert torch.equal(draw(0, temperature=0.0), greedy)
    assert torch.equal(draw(0, top_k=1), greedy)


def test_top_k_sampling_draws_only_among_the_k_best():
    model = tiny_transformer(seed=15)
    src = sources([6, 3, 4], seed=16)
    stepper = RecordingStepper(Seq2SeqStepper(model, src))
    generator = torch.Generator().manual_seed(0)
    out = sample(stepper, torch.full((3,), BOS), max_new_tokens=8, top_k=3, temperature=3.0, generator=generator)
    logits = torch.stack(stepper.logits, dim=1)  # (B, T, V), no row ended
    logits[..., PAD] = NEG  # never drawn
    rank = (logits > logits.gather(-1, out[..., None])).sum(dim=-1)  # (B, T) tokens more probable than the drawn one
    assert rank.max() < 3
    assert rank.max() > 0  # not merely greedy


def test_sampling_frequencies_follow_the_filtered_distribution():
    probs = torch.tensor([0.0, 0.1, 0.5, 0.15, 0.25], dtype=torch.float64)  # pad never drawn
    stepper = FixedStepper(probs.log())
    generator = torch.Generator().manual_seed(0)
    out = sample(stepper, torch.full((4000,), BOS), max_new_tokens=1, top_p=0.7, generator=generator, pad_id=PAD)
    counts = torch.bincount(out[:, 0], minlength=5).double() / 4000  # the nucleus: 0.5 and 0.25
    torch.testing.assert_close(
        counts, torch.tensor([0.0, 0.0, 2 / 3, 0.0, 1 / 3], dtype=torch.float64), atol=0.03, rtol=0
    )
    # Temperature 2 takes square roots of the probabilities: 0.2, 0.8 become 1/3, 2/3.
    stepper = FixedStepper(torch.tensor([0.0, 0.2, 0.8], dtype=torch.float64).log())
    out = sample(stepper, torch.full((4000,), BOS), max_new_tokens=1, temperature=2.0, generator=generator)
    counts = torch.bincount(out[:, 0], minlength=3).double() / 4000
    expected = torch.tensor([0.0, 1 / 3, 2 / 3], dtype=torch.float64)
    torch.testing.assert_close(counts, expected, atol=0.03, rtol=0)


def test_sampling_ends_rows_at_eos():
    stepper = FixedStepper(torch.tensor([0.0, 0.5, 0.2, 0.3]).log())  # eos = 2 is likely within a few tokens
    generator = torch.Generator().manual_seed(0)
    out = sample(stepper, torch.full((50,), BOS), max_new_tokens=12, eos_id=EOS, pad_id=PAD, generator=generator)
    for row in out.tolist():
        if EOS in row:
            end = row.index(EOS)
            assert PAD not in row[:end] and set(row[end + 1 :]) <= {PAD}
        else:
            assert len(row) == 12 and PAD not in row
    assert (out == EOS).any(dim=1).sum() > 40


# ---------------------------------------------------------------- a decoder-only language model


@pytest.mark.parametrize("max_len", [None, 8], ids=["whole_context", "sliding_window"])
def test_causal_lm_cache_matches_no_cache(max_len):
    model = tiny_lm(max_len=8 if max_len else 32)
    prompt = torch.tensor([[5, 6, 7], [8, 9, 10]])
    new_tokens = 14 if max_len else 10  # past the window: 3 + 14 > 8 positions
    outs = []
    for use_cache in (True, False):
        stepper = CausalLMStepper(model, use_cache=use_cache, max_len=max_len)
        greedy = greedy_decode(stepper, prompt, eos_id=None, max_new_tokens=new_tokens, pad_id=None)
        generator = torch.Generator().manual_seed(3)
        sampled = sample(
            CausalLMStepper(model, use_cache=use_cache, max_len=max_len),
            prompt,
            max_new_tokens=new_tokens,
            generator=generator,
        )
        stepper = CausalLMStepper(model, use_cache=use_cache, max_len=max_len)
        beam = beam_search(stepper, prompt, eos_id=11, max_new_tokens=new_tokens, beam_size=3, pad_id=0)
        outs.append((greedy, sampled, beam.tokens))
    for cached, uncached in zip(*outs, strict=True):
        assert torch.equal(cached, uncached)
    assert outs[0][0].shape == (2, new_tokens)


def test_causal_lm_needs_the_window_beyond_its_positions():
    model = tiny_lm(max_len=8)
    prompt = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(CausalLMStepper(model), prompt, eos_id=None, max_new_tokens=10, pad_id=None)
    windowed = CausalLMStepper(model, max_len=8)
    out = greedy_decode(windowed, prompt, eos_id=None, max_new_tokens=10, pad_id=None)
    assert out.shape == (1, 10)
    assert [c.length for c in windowed.cache] == [8, 8]  # rebuilt from the last 8 tokens


@pytest.mark.parametrize("max_len", [None, 8], ids=["whole_context", "sliding_window"])
def test_compiled_steps_give_the_uncompiled_tokens(max_len):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=23, max_len=8 if max_len else 32, d_model=16, n_heads=2, n_layers=2)
    model = GPT(config).double()  # without max_len, the stepper takes the capacity from model.config
    prompt = torch.tensor([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
    new_tokens = 12 if max_len else 10
    outs = []
    for compile in (False, True):
        greedy = greedy_decode(
            CausalLMStepper(model, max_len=max_len, compile=compile),
            prompt,
            eos_id=None,
            max_new_tokens=new_tokens,
            pad_id=None,
        )
        # Rows ending at eos leave the batch: the compiled step then sees another batch size.
        ended = greedy_decode(
            CausalLMStepper(model, max_len=max_len, compile=compile),
            prompt,
            eos_id=int(greedy[1, 4]),
            max_new_tokens=new_tokens,
            pad_id=0,
        )
        stepper = CausalLMStepper(model, max_len=max_len, compile=compile)
        beam = beam_search(stepper, prompt, eos_id=11, max_new_tokens=new_tokens, beam_size=3, pad_id=0)
        outs.append((greedy, ended, beam.tokens))
    for uncompiled, compiled in zip(*outs, strict=True):
        assert torch.equal(compiled, uncompiled)
    assert (outs[1][1] == 0).any()  # some row did end early


def test_compiled_stepper_checks_its_cache():
    model = tiny_lm(max_len=8)
    with pytest.raises(ValueError, match="use_cache"):
        CausalLMStepper(model, use_cache=False, compile=True)
    with pytest.raises(ValueError, match="max_len"):
        CausalLMStepper(model, compile=True)  # no max_len and no model.config to take it from
    gpt = GPT(GPTConfig(vocab_size=23, max_len=6, d_model=16, n_heads=2, n_layers=1))
    stepper = CausalLMStepper(gpt, compile=True)  # capacity: the model's context
    assert stepper.capacity == 6
    with pytest.raises(ValueError, match="exceed the cache's 6; pass max_len"):
        greedy_decode(stepper, torch.randint(0, 23, (1, 7)), eos_id=None, max_new_tokens=2, pad_id=None)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_min_new_tokens_holds_eos_back_and_then_lets_it_end_rows(search):
    torch.manual_seed(0)
    logits = torch.randn(8)
    logits[EOS] = 10.0  # the model wants to stop at once
    decode = (
        (lambda **kw: greedy_decode(FixedStepper(logits), torch.tensor([BOS, BOS]), **kw))
        if search == "greedy"
        else (lambda **kw: beam_search(FixedStepper(logits), torch.tensor([BOS, BOS]), beam_size=3, **kw).tokens)
    )
    assert decode(eos_id=EOS, max_new_tokens=9).tolist() == [[EOS], [EOS]]
    out = decode(eos_id=EOS, max_new_tokens=9, min_new_tokens=4)
    assert out.shape == (2, 5)
    assert (out[:, :4] != EOS).all() and (out[:, :4] != PAD).all() and (out[:, 4] == EOS).all()
    with pytest.raises(ValueError, match="min_new_tokens"):
        decode(eos_id=EOS, max_new_tokens=9, min_new_tokens=-1)
