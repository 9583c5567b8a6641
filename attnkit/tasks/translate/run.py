"""A trained translation run: translate sentences, score translations against references."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any, ClassVar

import torch
from torch import Tensor

from attnkit.atomic import atomic_path
from attnkit.data.batching import pad
from attnkit.data.marian_tokenizer import MarianTokenizer
from attnkit.data.parallel import read_parallel
from attnkit.data.readers import read_lines
from attnkit.data.tokenizer import decode_text, load_tokenizer
from attnkit.errors import DataError, UserError
from attnkit.models import Translator
from attnkit.nn import TransformerConfig
from attnkit.tasks.base import Command, Run, metrics_command, random_ids
from attnkit.tasks.io import read_inputs, write_records
from attnkit.tasks.rundir import write_metrics
from attnkit.tasks.translate.data import BOS_ID, EOS_ID, encode_sources, read_split
from attnkit.tasks.translate.decoding import Search, score, translate_ids
from attnkit.tasks.translate.options import TranslateOptions


class TranslatorRun(Run, task="translate", options=TranslateOptions, model=Translator, config=TransformerConfig):
    """A trained `Translator` with its joint tokenizer (or an imported Marian's SentencePiece models)."""

    # "specials": the start and end ids of an imported model whose vocabulary is not attnkit's.
    optional_keys = ("specials",)

    options: TranslateOptions

    @classmethod
    def new_model(cls, model_config: TransformerConfig, config: dict[str, Any]) -> Translator:
        specials = config.get("specials", {})
        if not isinstance(specials, dict) or not all(isinstance(specials.get(k, 0), int) for k in ("bos", "eos")):
            raise UserError("config.json: 'specials' must hold integer 'bos' and 'eos' ids")
        return Translator(model_config, bos_id=specials.get("bos", BOS_ID), eos_id=specials.get("eos", EOS_ID))

    def setup(self) -> None:
        if (self.run_dir / "tokenizer.json").exists() or not (self.run_dir / "vocab.json").exists():
            self.tokenizer: Any = load_tokenizer(self.run_dir / "tokenizer.json")
        else:
            self.tokenizer = MarianTokenizer(self.run_dir)
        self.truncated = 0
        # src (B, S) -> the stepper translations decode with; None = `Seq2SeqStepper` on the model
        # (`attnkit serve --backend onnx` sets one over the exported graphs)
        self.stepper: Any = None

    def encode(self, inputs: list[str], targets: list[str] | None = None) -> dict[str, Tensor]:
        """Sentences -> {"src": (B, S), "tgt_in": (B, T)}: the sources (tokens + eos) and, teacher-forced,
        BOS + the target tokens; without `targets`, the run's own greedy translations are the targets."""
        bos, eos, pad_id = self.model.bos_id, self.model.eos_id, self.model.config.pad_id
        sources, self.truncated = encode_sources(self.tokenizer, inputs, self.options.max_len, eos)
        if targets is None:
            targets_ids = translate_ids(
                self.model, sources, search="greedy", extra_len=self.options.extra_len, device=self.device
            )
        else:
            if len(targets) != len(inputs):
                raise DataError(f"{len(inputs)} source sentences but {len(targets)} targets")
            targets_ids = [self.tokenizer.encode(t, add_special_tokens=False).ids for t in targets]
        room = self.model.config.max_len - 1
        return {
            "src": pad(sources, pad_id).to(self.device),
            "tgt_in": pad([[bos, *ids[:room]] for ids in targets_ids], pad_id).to(self.device),
        }

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Next-token logits (B, T, V) at every target position."""
        with torch.no_grad():
            return self.model(batch["src"], batch["tgt_in"])

    def export_spec(self) -> dict[str, Any]:
        return {
            "length": self.model.config.max_len,
            "axes": {"src": "src_length", "tgt_in": "tgt_length"},
            "output": "logits",
            "meaning": "teacher-forced next-token logits (batch, tgt_length, vocabulary)",
        }

    def example_batch(self, batch_size: int, length: int) -> dict[str, Tensor]:
        config, model = self.model.config, self.model
        vocab = config.tgt_vocab_size or config.src_vocab_size
        src = random_ids(batch_size, length, 5, config.src_vocab_size, config.pad_id)
        tgt = random_ids(batch_size, length, 5, vocab, config.pad_id)
        tgt[:, 0] = model.bos_id
        return {"src": src, "tgt_in": tgt}

    record_options: ClassVar[dict[str, type]] = {"beam": int, "alpha": float}

    def records(self, inputs: list[str], beam: int | None = None, alpha: float | None = None) -> list[dict[str, Any]]:
        """Per sentence: {"source", "translation"} (beam 1 is greedy search), and "warning" where the
        sentence was cut to max_len."""
        search = _search(argparse.Namespace(beam=beam, alpha=alpha))
        translations = self.translate(inputs, search=search, beam=beam, alpha=alpha)
        room = self.options.max_len - 1  # tokens before the source's eos
        records = []
        for source, translation, encoding in zip(
            inputs, translations, self.tokenizer.encode_batch(inputs), strict=True
        ):
            record = {"source": source, "translation": translation}
            if len(encoding.ids) > room:
                record["warning"] = f"cut to {room} of its {len(encoding.ids)} tokens"
            records.append(record)
        return records

    def predict(self, inputs: list[str], **kwargs: Any) -> list[str]:
        """Translations of `inputs`; keyword arguments as `translate`."""
        return self.translate(inputs, **kwargs)

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
        sources, self.truncated = encode_sources(self.tokenizer, sentences, self.options.max_len, self.model.eos_id)
        ids = translate_ids(
            self.model,
            sources,
            search=search,
            beam=beam or self.options.beam,
            alpha=self.options.alpha if alpha is None else alpha,
            extra_len=self.options.extra_len,
            use_cache=use_cache,
            device=self.device,
            penalty=self.options.length_penalty,
            stepper=self.stepper,
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


# ---------------------------------------------------------------------------------------- commands


def _search(args: argparse.Namespace) -> Search:
    """Check --beam and --alpha; the search they ask for: greedy for --beam 1, else beam."""
    if args.beam is not None and args.beam < 1:
        raise UserError("--beam must be at least 1")
    if args.alpha is not None and not (math.isfinite(args.alpha) and args.alpha >= 0):
        raise UserError(f"--alpha must be a finite number >= 0, got {args.alpha}")
    return "greedy" if args.beam == 1 else "beam"


def _search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--beam", type=int, help="beam size (default: the run's; 1 = greedy)")
    parser.add_argument("--alpha", type=float, help="beam search's length penalty α (default: the run's)")


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--src", help="source sentences, one per line (default: the run's own test split)")
    parser.add_argument("--ref", help="reference translations, line-aligned with --src")
    parser.add_argument("--ref-tok", help="lowercased tokenized references, for tokenized BLEU")
    _search_arguments(parser)


def _evaluate(run: TranslatorRun, args: argparse.Namespace) -> dict[str, float]:
    search = _search(args)
    if args.src or args.ref or args.ref_tok:
        if not (args.src and args.ref):
            raise UserError("evaluating a translate run needs --src FILE and --ref FILE")
        pairs = read_parallel(args.src, args.ref)
        ref_tok = read_lines(args.ref_tok) if args.ref_tok else None
    else:  # the run's own test split
        pairs = read_split(run.options, "test") if "source" not in run.config else None
        if pairs is None:
            raise UserError("evaluating a translate run needs --src FILE and --ref FILE: it has no test split")
        ref_tok = read_lines(run.options.test_ref_tok) if run.options.test_ref_tok else None
    return run.evaluate(pairs.src, pairs.tgt, ref_tok=ref_tok, searches=(search,), beam=args.beam, alpha=args.alpha)


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", help="sentences to translate (default: --input, else standard input)")
    parser.add_argument("--input", help="file of sentences: one per line (.txt) or JSON lines with a 'text' field")
    parser.add_argument(
        "--output",
        help="write translations here instead of printing: .jsonl ({source, translation} per line), .csv "
        "(source,translation), any other suffix plain text (one translation per line)",
    )
    _search_arguments(parser)


def _predict(run: TranslatorRun, args: argparse.Namespace) -> int:
    search = _search(args)
    sentences = read_inputs(args.texts, args.input, stdin=True, what="sentences to translate")
    translations = run.translate(sentences, search=search, beam=args.beam, alpha=args.alpha)
    if run.truncated:
        print(f"warning: {run.truncated} sentences were cut to {run.options.max_len} tokens", file=sys.stderr)
    if args.output:
        records = [{"source": s, "translation": t} for s, t in zip(sentences, translations, strict=True)]
        write_records(args.output, records, text_key="translation")
        print(f"wrote {len(translations)} translations to {args.output}")
        return 0
    for translation in translations:
        print(translation)
    return 0


EVALUATE = metrics_command(
    "translate: translate --src and score it against --ref (sacreBLEU, chrF).", _evaluate_arguments, _evaluate
)
PREDICT = Command(
    _predict_arguments, _predict, "translate: sentences given on the command line, in a file, or on stdin."
)
