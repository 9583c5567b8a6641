"""Machine translation: the paper's encoder-decoder on parallel text, on the one engine.

Train: read parallel files (or TSV pairs), train one joint byte-level BPE on both sides of the
training data, train a `Translator` with label smoothing and the paper's inverse-square-root
schedule on batches built by token count, average the last k evaluation checkpoints (§6.1), then
translate the test set (else validation) with greedy and beam search and score it with sacreBLEU
(cased, detokenized; signature printed) and chrF, plus lowercased tokenized BLEU against
tokenized references when given (`--test-ref-tok`), labelled as such.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attnkit.atomic import atomic_path
from attnkit.data.batching import pad, token_bucketed_plan
from attnkit.data.bpe_dropout import BPEDropout
from attnkit.data.datasets import multi30k_files
from attnkit.data.parallel import ParallelTexts, drop_empty, read_parallel, read_tsv_pairs
from attnkit.data.readers import read_lines
from attnkit.data.tokenizer import CLS_ID, PAD_ID, SEP_ID, decode_text, load_tokenizer, train_tokenizer
from attnkit.decode import Seq2SeqStepper, beam_search, greedy_decode
from attnkit.engine import Batches, TrainConfig, Trainer, load_weights, unwrap
from attnkit.errors import DataError, UserError
from attnkit.metrics import bleu, bleu_breakdown, chrf, moses_tokenize, tokenized_bleu
from attnkit.models import Translator
from attnkit.nn import TransformerConfig, linear_cross_entropy
from attnkit.options import check_model_options
from attnkit.tasks.adapters import HiddenForward
from attnkit.tasks.runs import open_run, start_run, write_metrics, write_new_run

BOS_ID, EOS_ID = CLS_ID, SEP_ID  # the shared vocabulary's [CLS] and [SEP] start and end sentences
Search = Literal["greedy", "beam"]


@dataclass(frozen=True, kw_only=True)
class TranslateOptions:
    """Everything `attnkit train translate` takes besides the engine's TrainConfig."""

    out: str = field(default="runs/translate", metadata={"help": "run directory to write"})
    train_src: str | None = field(default=None, metadata={"help": "training source sentences, one per line"})
    train_tgt: str | None = field(default=None, metadata={"help": "training target sentences, line-aligned"})
    valid_src: str | None = field(default=None, metadata={"help": "validation source sentences"})
    valid_tgt: str | None = field(default=None, metadata={"help": "validation target sentences"})
    test_src: str | None = field(default=None, metadata={"help": "test source sentences"})
    test_tgt: str | None = field(default=None, metadata={"help": "test target sentences (references)"})
    test_ref_tok: str | None = field(
        default=None,
        metadata={"help": "lowercased Moses-tokenized test references, for tokenized BLEU as papers report it"},
    )
    dataset: str | None = field(
        default=None,
        metadata={"help": "multi30k: its train/val/test_2016_flickr files for --src-lang -> --tgt-lang"},
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "the dataset's folder (default $ATTNKIT_DATA/multi30k)"}
    )
    train_pairs: str | None = field(default=None, metadata={"help": "training pairs as TSV (source<TAB>target)"})
    valid_pairs: str | None = field(default=None, metadata={"help": "validation pairs as TSV"})
    test_pairs: str | None = field(default=None, metadata={"help": "test pairs as TSV"})
    src_lang: str = field(default="de", metadata={"help": "source language code (for Moses tokenization)"})
    tgt_lang: str = field(default="en", metadata={"help": "target language code"})
    valid_size: int = field(default=500, metadata={"help": "pairs held out of training when no validation set"})
    vocab_size: int = field(default=8000, metadata={"help": "joint byte-level BPE vocabulary"})
    tokenizer_file: str | None = field(default=None, metadata={"help": "use this tokenizer.json instead"})
    bpe_dropout: float = field(
        default=0.0,
        metadata={
            "help": "BPE-dropout (Provilkov et al. 2020): skip each merge with this probability when segmenting"
            " training sentences, afresh for every batch (the paper: 0.1; 0 = off); evaluation keeps plain BPE"
        },
    )
    max_len: int = field(default=128, metadata={"help": "tokens per sentence; longer ones are truncated"})
    d_model: int = field(default=256, metadata={"help": "model width"})
    n_heads: int = field(default=4, metadata={"help": "attention heads"})
    n_encoder_layers: int = field(default=3, metadata={"help": "encoder layers"})
    n_decoder_layers: int = field(default=3, metadata={"help": "decoder layers"})
    d_ff: int = field(default=1024, metadata={"help": "feed-forward width"})
    dropout: float = field(default=0.1, metadata={"help": "dropout (the paper: 0.1)"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention weights"})
    norm_first: bool = field(default=False, metadata={"help": "pre-norm (the paper is post-norm)"})
    label_smoothing: float = field(default=0.1, metadata={"help": "label smoothing ε (the paper: 0.1)"})
    max_tokens: int = field(default=4096, metadata={"help": "source + target tokens per batch, padding included"})
    average_last: int = field(default=5, metadata={"help": "average the last k evaluation checkpoints (1 = off)"})
    beam: int = field(default=4, metadata={"help": "beam size of the final evaluation (the paper: 4)"})
    alpha: float = field(default=0.6, metadata={"help": "length penalty α (the paper: 0.6)"})
    extra_len: int = field(default=50, metadata={"help": "longest output = source length + this (the paper: 50)"})

    def __post_init__(self) -> None:
        given = [bool(self.train_src or self.train_tgt), bool(self.train_pairs), bool(self.dataset)]
        if sum(given) != 1:
            raise UserError("give --train-src FILE --train-tgt FILE, --train-pairs FILE, or --dataset multi30k")
        if self.dataset and self.dataset != "multi30k":
            raise UserError(f"unknown dataset {self.dataset!r}: translate knows multi30k")
        for side in ("train", "valid", "test"):
            src, tgt = getattr(self, f"{side}_src"), getattr(self, f"{side}_tgt")
            if bool(src) != bool(tgt):
                raise UserError(f"--{side}-src and --{side}-tgt go together")
        if self.max_len < 4:
            raise UserError(f"--max-len must be at least 4, got {self.max_len}")
        if self.beam < 1 or self.average_last < 1:
            raise UserError("--beam and --average-last must be at least 1")
        if self.alpha < 0:
            raise UserError(f"--alpha must be at least 0, got {self.alpha}")
        if not 0 <= self.bpe_dropout < 1:
            raise UserError(f"--bpe-dropout must be in [0, 1), got {self.bpe_dropout}")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        check_model_options(lambda: self.model_config(vocab_size=16))

    def model_config(self, vocab_size: int) -> TransformerConfig:
        return TransformerConfig(
            src_vocab_size=vocab_size,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_encoder_layers=self.n_encoder_layers,
            n_decoder_layers=self.n_decoder_layers,
            d_ff=self.d_ff,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            max_len=self.max_len + self.extra_len + 2,
            norm_first=self.norm_first,
            pad_id=PAD_ID,
        )


TRAIN_DEFAULTS = {
    "metric": "loss",
    "metric_mode": "min",
    "lr": 1e-3,
    "beta2": 0.98,
    "weight_decay": 0.0,
    "schedule": "inverse_sqrt",
    "warmup_steps": 1000,
    "grad_clip": 0.0,
    "epochs": 20,
}


class TranslateTask:
    """Label-smoothed cross-entropy of the next target token; validation loss and perplexity."""

    def __init__(self, label_smoothing: float) -> None:
        self.label_smoothing = label_smoothing

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        hidden = model(batch["src"], batch["tgt_in"])  # (B, T, D): `Translator.hidden` via forward_hidden
        real = batch["tgt_out"] != PAD_ID  # (B, T)
        weight = unwrap(model).lm_head.weight  # (V, D)
        loss = linear_cross_entropy(hidden[real], weight, batch["tgt_out"][real], label_smoothing=self.label_smoothing)
        return loss, int(real.sum())

    def eval_step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        translator = unwrap(model)
        logits = translator.lm_head(model(batch["src"], batch["tgt_in"])).float()  # (B, T, V)
        target = batch["tgt_out"]
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), target, ignore_index=PAD_ID, reduction="none"
        )  # (B, T)
        return {"nll": nll.sum(dim=1), "tokens": (target != PAD_ID).sum(dim=1)}

    def metrics(self, rows: dict[str, Tensor]) -> dict[str, float]:
        loss = float(rows["nll"].sum() / rows["tokens"].sum().clamp(min=1))
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0))}


# ---------------------------------------------------------------------------------------- data


@dataclass
class Encoded:
    """Sentences as ids: sources end with EOS; targets are BOS + tokens + EOS.

    With `dropout`, `words` holds each pair's pre-tokenized source and target words, which every
    batch segments afresh; `src` and `tgt` (the plain segmentation) then only size the batches.
    """

    src: list[list[int]]
    tgt: list[list[int]]
    truncated: int
    max_len: int
    dropout: BPEDropout | None = None
    words: list[tuple[list[str], list[str]]] | None = None

    def batches(self, max_tokens: int, *, shuffle: bool, seed: int) -> Batches:
        lengths = [len(s) + len(t) for s, t in zip(self.src, self.tgt, strict=True)]
        plan = token_bucketed_plan(lengths, max_tokens, shuffle=shuffle, seed=seed)
        dropout, words, max_len = self.dropout, self.words, self.max_len

        def collate(indices: list[int]) -> dict[str, Tensor]:
            if dropout is None:
                src, tgt = [self.src[i] for i in indices], [self.tgt[i] for i in indices]
            else:
                # Seeded from the torch generator, whose state the checkpoints keep: runs repeat and resume exactly.
                rng = random.Random(int(torch.randint(2**62, ())))
                src = [source_ids(dropout.encode_words(words[i][0], rng), max_len)[0] for i in indices]
                tgt = [target_ids(dropout.encode_words(words[i][1], rng), max_len)[0] for i in indices]
            padded = pad(tgt, PAD_ID)  # (B, T + 1)
            return {"src": pad(src, PAD_ID), "tgt_in": padded[:, :-1], "tgt_out": padded[:, 1:]}

        return Batches(plan, collate)


def source_ids(ids: list[int], max_len: int) -> tuple[list[int], bool]:
    """A source's ids + EOS, cut to `max_len` in all, and whether it was cut."""
    cut = len(ids) > max_len - 1
    return [*ids[: max_len - 1], EOS_ID], cut


def target_ids(ids: list[int], max_len: int) -> tuple[list[int], bool]:
    """BOS + a target's ids + EOS, cut to `max_len` in all, and whether it was cut."""
    cut = len(ids) > max_len - 2
    return [BOS_ID, *ids[: max_len - 2], EOS_ID], cut


def encode_sources(tokenizer: Any, texts: list[str], max_len: int) -> tuple[list[list[int]], int]:
    """Source ids (tokens + EOS, cut to max_len) and how many sentences were cut."""
    encoded = [source_ids(e.ids, max_len) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [ids for ids, _ in encoded], sum(cut for _, cut in encoded)


def encode_pairs(tokenizer: Any, pairs: ParallelTexts, max_len: int, *, dropout: BPEDropout | None = None) -> Encoded:
    """The pairs as ids; with `dropout`, also their pre-tokenized words, for batches segmented with it."""
    src, cut_src = encode_sources(tokenizer, pairs.src, max_len)
    encoded = [target_ids(e.ids, max_len) for e in tokenizer.encode_batch(pairs.tgt, add_special_tokens=False)]
    tgt, cut_tgt = [ids for ids, _ in encoded], sum(cut for _, cut in encoded)
    words = None
    if dropout is not None:
        words = [(dropout.words(s), dropout.words(t)) for s, t in zip(pairs.src, pairs.tgt, strict=True)]
    return Encoded(src, tgt, cut_src + cut_tgt, max_len, dropout, words)


def resolve_dataset(options: TranslateOptions) -> TranslateOptions:
    """Options with a standard dataset's files filled in (explicit file options win)."""
    if not options.dataset:
        return options
    files = multi30k_files(options.src_lang, options.tgt_lang, options.data_dir)
    chosen = {k: str(v) for k, v in files.items() if getattr(options, k) is None}
    return dataclasses.replace(options, dataset=None, **chosen)


def read_split(options: TranslateOptions, side: str) -> ParallelTexts | None:
    src, tgt, pairs = (getattr(options, f"{side}_{k}") for k in ("src", "tgt", "pairs"))
    if src:
        return read_parallel(src, tgt)
    if pairs:
        return read_tsv_pairs(pairs)
    return None


# ---------------------------------------------------------------------------------------- decoding


def translate_ids(
    model: Translator,
    sources: list[list[int]],
    *,
    search: Search = "beam",
    beam: int = 4,
    alpha: float = 0.6,
    extra_len: int = 50,
    batch_size: int = 64,
    use_cache: bool = True,
    device: torch.device | str = "cpu",
) -> list[list[int]]:
    """Target token ids (without BOS/EOS) for each source, in order; batches sorted by length."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[list[int]] = [[] for _ in sources]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        src = pad([sources[i] for i in chunk], PAD_ID).to(device)  # (B, S)
        limit = torch.tensor([len(sources[i]) + extra_len for i in chunk], device=src.device)
        room = model.config.max_len - 1
        limit = limit.clamp(max=room)
        stepper = Seq2SeqStepper(model, src, use_cache=use_cache)
        first = torch.full((len(chunk),), BOS_ID, device=src.device)
        if search == "greedy":
            tokens = greedy_decode(stepper, first, eos_id=EOS_ID, max_new_tokens=limit, pad_id=PAD_ID)
        else:
            tokens = beam_search(
                stepper, first, eos_id=EOS_ID, max_new_tokens=limit, beam_size=beam, alpha=alpha, pad_id=PAD_ID
            ).tokens
        for row, index in enumerate(chunk):
            ids = tokens[row].tolist()
            out[index] = ids[: ids.index(EOS_ID)] if EOS_ID in ids else [t for t in ids if t != PAD_ID]
    return out


def score(
    hypotheses: list[str], references: list[str], ref_tok: list[str] | None, tgt_lang: str, prefix: str = ""
) -> tuple[dict[str, float], dict[str, str]]:
    """sacreBLEU (cased, detokenized) and chrF; tokenized lowercased BLEU when references are given.

    Returns the scores under `prefix` + "bleu", "chrf", "tok_bleu", and for each metric the text to
    print beside it: its signature, and for the BLEUs also the precisions and brevity penalty
    (under "bleu_breakdown" and "tok_bleu_breakdown")."""
    b, c = bleu(hypotheses, references), chrf(hypotheses, references)
    metrics = {f"{prefix}bleu": b["score"], f"{prefix}chrf": c["score"]}
    notes = {"bleu": b["signature"], "chrf": c["signature"], "bleu_breakdown": bleu_breakdown(b)}
    if ref_tok is not None:
        t = tokenized_bleu(moses_tokenize(hypotheses, tgt_lang), ref_tok)
        metrics[f"{prefix}tok_bleu"] = t["score"]
        notes["tok_bleu"] = t["signature"] + " (hypotheses lowercased and Moses-tokenized)"
        notes["tok_bleu_breakdown"] = bleu_breakdown(t)
    return metrics, notes


# ---------------------------------------------------------------------------------------- commands


def train(
    options: TranslateOptions | None,
    train_config: TrainConfig,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
    log: Any = print,
) -> dict[str, float]:
    """`attnkit train translate`: train, average the last checkpoints, translate and score the test set."""
    where, run_dir, options, train_config, saved, log = start_run(
        options, TranslateOptions, train_config, resume=resume, run_dir=run_dir, log=log
    )
    options = resolve_dataset(options)
    train_pairs = read_split(options, "train")
    train_pairs, dropped = drop_empty(train_pairs)
    if dropped:
        log(f"note: dropped {dropped} training pairs with an empty side")
    valid_pairs = read_split(options, "valid")
    if valid_pairs is None:
        if len(train_pairs) <= options.valid_size:
            raise DataError(f"too few training pairs ({len(train_pairs)}) to hold out {options.valid_size}")
        held = options.valid_size
        valid_pairs = ParallelTexts(train_pairs.src[-held:], train_pairs.tgt[-held:])
        train_pairs = ParallelTexts(train_pairs.src[:-held], train_pairs.tgt[:-held])
        log(f"validation: held out the last {held} training pairs")
    test_pairs = read_split(options, "test")
    if saved is not None:
        tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    elif options.tokenizer_file:
        tokenizer = load_tokenizer(options.tokenizer_file)
    else:
        tokenizer = train_tokenizer(train_pairs.src + train_pairs.tgt, kind="bytebpe", vocab_size=options.vocab_size)
    dropout = BPEDropout(tokenizer, options.bpe_dropout) if options.bpe_dropout > 0 else None
    model_config = options.model_config(tokenizer.get_vocab_size())
    if not resume:
        config = {
            "task": "translate",
            "options": dataclasses.asdict(options),
            "model": model_config.to_dict(),
            "train": train_config.to_dict(),
        }
        write_new_run(run_dir, where, config, tokenizer=tokenizer)
    encoded = {"train": encode_pairs(tokenizer, train_pairs, options.max_len, dropout=dropout)}
    encoded["valid"] = encode_pairs(tokenizer, valid_pairs, options.max_len)
    truncated = encoded["train"].truncated + encoded["valid"].truncated
    if truncated:
        log(f"warning: {truncated} sentences are longer than max_len={options.max_len} tokens and were truncated")
    log(
        f"data: {len(train_pairs):,} train / {len(valid_pairs):,} validation / "
        f"{len(test_pairs) if test_pairs else 0:,} test pairs; joint vocabulary {tokenizer.get_vocab_size():,}"
    )
    torch.manual_seed(train_config.seed)
    model = Translator(model_config, bos_id=BOS_ID, eos_id=EOS_ID)
    log(f"model: Translator, {model.num_parameters():,} parameters")
    train_config = train_config.averaging(options.average_last)
    trainer = Trainer(
        HiddenForward(model),
        TranslateTask(options.label_smoothing),
        train_config,
        run_dir,
        encoded["train"].batches(options.max_tokens, shuffle=True, seed=train_config.seed),
        encoded["valid"].batches(options.max_tokens, shuffle=False, seed=0),
        where,
        log=log,
    )
    trainer.fit(resume=resume)
    if options.average_last > 1:
        trainer.keep_average(options.average_last)
    else:
        load_weights(model, run_dir / "model.safetensors")
    if not where.is_main:
        return {}
    final = test_pairs if test_pairs is not None else valid_pairs
    name = "test" if test_pairs is not None else "validation"
    ref_tok = read_lines(options.test_ref_tok) if options.test_ref_tok and test_pairs is not None else None
    loaded = LoadedTranslator.from_parts(run_dir, options, model, tokenizer, where.device)
    return loaded.evaluate(final.src, final.tgt, ref_tok=ref_tok, split=name, log=log, searches=("greedy", "beam"))


class LoadedTranslator:
    """A trained translation run, for evaluate and predict."""

    def __init__(self, run_dir: str | Path, device: str = "cpu") -> None:
        run_dir, config = open_run(run_dir)
        if config["task"] != "translate":
            raise UserError(f"{run_dir}: is a {config['task']} run, not a translate run")
        options = TranslateOptions(**config["options"])
        model = Translator(TransformerConfig.from_dict(config["model"]), bos_id=BOS_ID, eos_id=EOS_ID)
        load_weights(model, run_dir / "model.safetensors")
        self._set(run_dir, options, model, load_tokenizer(run_dir / "tokenizer.json"), torch.device(device))

    @classmethod
    def from_parts(cls, run_dir: Path, options: TranslateOptions, model: Translator, tokenizer: Any, device):
        self = cls.__new__(cls)
        self._set(run_dir, options, model, tokenizer, torch.device(device))
        return self

    def _set(self, run_dir: Path, options: TranslateOptions, model: Translator, tokenizer: Any, device) -> None:
        self.run_dir, self.options, self.tokenizer, self.device = run_dir, options, tokenizer, device
        self.model = model.to(device).eval()

    def translate(
        self,
        sentences: list[str],
        *,
        search: Search = "beam",
        beam: int | None = None,
        alpha: float | None = None,
        use_cache: bool = True,
    ) -> list[str]:
        """Detokenized translations of `sentences`; an empty sentence translates to an empty one.

        `beam` and the length penalty `alpha` default to the run's own (its --beam and --alpha)."""
        sources, self.truncated = encode_sources(self.tokenizer, sentences, self.options.max_len)
        ids = translate_ids(
            self.model,
            sources,
            search=search,
            beam=beam or self.options.beam,
            alpha=self.options.alpha if alpha is None else alpha,
            extra_len=self.options.extra_len,
            use_cache=use_cache,
            device=self.device,
        )
        pairs = zip(ids, sentences, strict=True)
        return [decode_text(self.tokenizer, out) if text.strip() else "" for out, text in pairs]

    def evaluate(
        self,
        sources: list[str],
        references: list[str],
        *,
        ref_tok: list[str] | None = None,
        split: str = "evaluation",
        log: Any = print,
        searches: tuple[Search, ...] = ("beam",),
        beam: int | None = None,
        alpha: float | None = None,
    ) -> dict[str, float]:
        """Translate and score; beam-search figures are unprefixed, greedy ones start with `greedy_`."""
        if len(sources) != len(references):
            raise DataError(f"{len(sources)} source sentences but {len(references)} references")
        if ref_tok is not None and len(ref_tok) != len(references):
            raise DataError(f"{len(ref_tok)} tokenized references for {len(references)} sentences")
        beam = beam or self.options.beam
        alpha = self.options.alpha if alpha is None else alpha
        metrics: dict[str, float] = {}
        for search in searches:
            started = time.perf_counter()
            hypotheses = self.translate(sources, search=search, beam=beam, alpha=alpha)
            seconds = time.perf_counter() - started
            prefix = "greedy_" if search == "greedy" else ""
            found, notes = score(hypotheses, references, ref_tok, self.options.tgt_lang, prefix)
            metrics.update(found)
            label = "greedy" if search == "greedy" else f"beam {beam}, α {alpha}"
            log(f"{split} ({label}, {len(sources):,} sentences, {len(sources) / seconds:.1f} sentences/s):")
            log(f"  sacreBLEU {found[prefix + 'bleu']:.2f}  [{notes['bleu']}]")
            log(f"    {notes['bleu_breakdown']}")
            log(f"  chrF {found[prefix + 'chrf']:.2f}  [{notes['chrf']}]")
            if "tok_bleu" in notes:
                log(f"  tokenized BLEU {found[prefix + 'tok_bleu']:.2f}  [{notes['tok_bleu']}]")
                log(f"    {notes['tok_bleu_breakdown']}")
            if search == searches[-1]:
                out = self.run_dir / f"{split}.hyp.{self.options.tgt_lang}"
                with atomic_path(out) as tmp:
                    tmp.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
        if self.truncated:
            log(f"warning: {self.truncated} source sentences were truncated to max_len={self.options.max_len}")
        write_metrics(self.run_dir, metrics)
        return metrics


def read_inputs(texts: list[str], input_path: str | None) -> list[str]:
    """Sentences from the command line, a file, or standard input when neither is given."""
    sentences = list(texts)
    if input_path:
        sentences += read_lines(input_path)
    if not sentences and not sys.stdin.isatty():
        sentences = sys.stdin.read().splitlines()
    if not sentences:
        raise UserError("give sentences to translate, --input FILE, or lines on standard input")
    return sentences
