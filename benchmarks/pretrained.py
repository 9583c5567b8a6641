"""Pretrained weights in (issue #35): imported models against transformers on the same weights.

For BERT-base, GPT-2 small, ViT-B/16 and an OPUS-MT-sized Marian, built here from their published
configurations with random weights (no network; timing and agreement do not depend on the values),
saved with `save_pretrained`, imported with `attnkit.hf.load` and prepared for inference as every
command prepares a run's model (`attnkit.precision.to_precision(model, "fp32")`: fused q/k/v,
oneDNN-packed linear layers):

- agreement: the largest absolute difference of the outputs (hidden states / logits) in float32;
- forward speed: tokens (images) per second of a batch, attnkit against transformers, medians over
  alternating rounds (both run on the same torch; the ratio is the median of per-round ratios);
- greedy generation (KV cache on both sides) of GPT-2 and Marian: new tokens per second at batch 1
  and 8, every output forced to the same length;
- GPT-2 at batch 1 with compiled decoding steps: attnkit's `generate --compile` (`CausalLMStepper(
  compile=True)`) against transformers' default `generate` and against transformers compiled the
  same way (static cache, `CompileConfig`), in alternating rounds; compile time reported apart.

Targets: outputs equal within 1e-4; attnkit >= 1.0x transformers everywhere, >= 1.5x for cached
generation at batch 1.

    python benchmarks/pretrained.py [--rounds 5] [--threads 2] [--tiny]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attnkit.decode import CausalLMStepper, Seq2SeqStepper, greedy_decode
from attnkit.hf import load
from attnkit.precision import to_precision
from benchmarks._common import (
    alternate,
    machine,
    round_ratios,
    transformers_cpu_compile_config,
    write_json,
    write_section,
)

CPU = torch.device("cpu")
TARGET_DIFF = 1e-4


def _models(tiny: bool) -> dict[str, tuple[object, dict[str, int]]]:
    """transformers models (random weights) at the published sizes, or tiny ones for a smoke run."""
    import transformers as t

    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    bert = t.BertConfig(**(small if tiny else {}))
    gpt2 = t.GPT2Config(**(dict(n_embd=64, n_layer=2, n_head=4) if tiny else {}))
    vit = t.ViTConfig(**(small if tiny else {}))
    # Helsinki-NLP/opus-mt-de-en's configuration (MarianConfig's defaults are larger: d_model 1024,
    # 12 + 12 layers), or a tiny one
    opus_mt = dict(
        d_model=512,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        max_position_embeddings=512,
    )
    marian_sizes = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=128, decoder_ffn_dim=128)
    marian = t.MarianConfig(
        vocab_size=58101,
        pad_token_id=58100,
        decoder_start_token_id=58100,
        eos_token_id=0,
        activation_function="swish",
        scale_embedding=True,
        **(marian_sizes if tiny else opus_mt),
    )
    return {
        "BERT-base": (t.BertModel(bert, add_pooling_layer=True), {"batch": 8, "length": 128}),
        "GPT-2 small": (t.GPT2LMHeadModel(gpt2), {"batch": 8, "length": 128}),
        "ViT-B/16": (t.ViTForImageClassification(vit), {"batch": 8, "length": vit.image_size}),
        "Marian (opus-mt)": (t.MarianMTModel(marian), {"batch": 8, "length": 32}),
    }


def _forward_pair(name: str, ref: torch.nn.Module, ours: torch.nn.Module, batch: int, length: int):
    """(transformers' call, attnkit's call, the outputs to compare, items per call)."""
    generator = torch.Generator().manual_seed(0)
    if name.startswith("ViT"):
        images = torch.randn(batch, 3, length, length, generator=generator)
        return (lambda: ref(images).logits), (lambda: ours(images)), batch
    ids = torch.randint(0, 1000, (batch, length), generator=generator)
    if name.startswith("Marian"):
        start = torch.full((batch, 1), ours.bos_id)
        tgt = torch.cat([start, ids[:, : length - 1]], dim=1)
        return (lambda: ref(input_ids=ids, decoder_input_ids=tgt).logits), (lambda: ours(ids, tgt)), 2 * batch * length
    if name.startswith("BERT"):
        return (lambda: ref(ids).last_hidden_state), (lambda: ours(ids)[0]), batch * length
    return (lambda: ref(ids).logits), (lambda: ours(ids)), batch * length


def measure_model(name: str, ref: torch.nn.Module, shape: dict[str, int], rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        ref.save_pretrained(folder)
        # as `open_run` holds a run's model for `predict`, `generate` and `serve` (packed linear layers)
        ours = load(folder)
        parameters = sum(p.numel() for p in ours.parameters())  # before q/k/v are fused (a copy)
        ours = to_precision(ours, "fp32")
    ref.eval()
    theirs, mine, items = _forward_pair(name, ref, ours, shape["batch"], shape["length"])
    with torch.inference_mode():
        difference = float((theirs() - mine()).abs().max())
        times = alternate({"transformers": theirs, "attnkit": mine}, rounds, CPU)
    ratio = round_ratios(times["transformers"], times["attnkit"])
    row: dict[str, object] = {
        "model": name,
        "parameters": parameters,
        "max_abs_diff": difference,
        "batch": shape["batch"],
        "length": shape["length"],
        "transformers_per_s": items / statistics.median(times["transformers"]),
        "attnkit_per_s": items / statistics.median(times["attnkit"]),
        "speedup": ratio["median"],
        "speedup_range": [ratio["min"], ratio["max"]],
    }
    if name.startswith(("GPT", "Marian")):
        row["generation"] = [generation(ref, ours, batch, rounds) for batch in (1, 8)]
    if name.startswith("GPT"):
        row["compiled"] = compiled_generation(ref, ours, rounds)
    return row


def generation(ref: torch.nn.Module, ours: torch.nn.Module, batch: int, rounds: int, new: int = 32) -> dict:
    """Greedy generation with the KV cache, new tokens per second, and whether the tokens agree. GPT-2
    continues a 16-token prompt; Marian translates 16-token sources; every output is `new` tokens long
    (no eos on either side: nothing stops a row, nothing is suppressed or forced)."""
    prompt = torch.randint(1, 1000, (batch, 16), generator=torch.Generator().manual_seed(1))
    seq2seq = hasattr(ours, "bos_id")
    settings = dict(max_new_tokens=new, do_sample=False, num_beams=1, eos_token_id=None, forced_eos_token_id=None)
    if not seq2seq:
        settings["pad_token_id"] = 0

    def theirs() -> torch.Tensor:
        out = ref.generate(prompt, **settings)
        return out[:, 1:] if seq2seq else out[:, prompt.size(1) :]

    def mine() -> torch.Tensor:
        if seq2seq:
            start = torch.full((batch,), ours.bos_id)
            return greedy_decode(Seq2SeqStepper(ours, prompt), start, eos_id=None, max_new_tokens=new, pad_id=None)
        return greedy_decode(CausalLMStepper(ours), prompt, eos_id=None, max_new_tokens=new, pad_id=None)

    with torch.inference_mode():
        same = torch.equal(theirs(), mine())
        times = alternate({"transformers": theirs, "attnkit": mine}, rounds, CPU)
    ratio = round_ratios(times["transformers"], times["attnkit"])
    return {
        "batch": batch,
        "new_tokens": new,
        "same_tokens": same,
        "transformers_tokens_per_s": batch * new / statistics.median(times["transformers"]),
        "attnkit_tokens_per_s": batch * new / statistics.median(times["attnkit"]),
        "speedup": ratio["median"],
        "speedup_range": [ratio["min"], ratio["max"]],
    }


def compiled_generation(ref: torch.nn.Module, ours: torch.nn.Module, rounds: int, new: int = 32) -> dict:
    """GPT-2, batch 1, greedy: attnkit's compiled steps (as `attnkit generate --compile` runs them,
    caches of the model's context) against transformers' default generate and its compiled generate
    (static cache; on a CPU transformers compiles only when a private flag of CompileConfig says so)."""
    prompt = torch.randint(1, 1000, (1, 16), generator=torch.Generator().manual_seed(1))
    settings = dict(max_new_tokens=new, do_sample=False, num_beams=1, eos_token_id=None, pad_token_id=0)
    config = transformers_cpu_compile_config()
    context = ours.config.max_len
    calls = {
        "transformers": lambda: ref.generate(prompt, **settings)[:, prompt.size(1) :],
        "transformers compiled": lambda: ref.generate(
            prompt, **settings, cache_implementation="static", compile_config=config
        )[:, prompt.size(1) :],
        "attnkit compiled": lambda: greedy_decode(
            CausalLMStepper(ours, max_len=context, compile=True), prompt, eos_id=None, max_new_tokens=new, pad_id=None
        ),
    }
    first, outputs = {}, {}
    with torch.inference_mode():
        for key, call in calls.items():
            started = time.perf_counter()
            outputs[key] = call()  # builds the compiled graphs
            first[key] = time.perf_counter() - started
        times = alternate(calls, rounds, CPU)
    over_default = round_ratios(times["transformers"], times["attnkit compiled"])
    over_compiled = round_ratios(times["transformers compiled"], times["attnkit compiled"])
    return {
        "batch": 1,
        "new_tokens": new,
        "same_tokens": all(torch.equal(out, outputs["transformers"]) for out in outputs.values()),
        "tokens_per_s": {key: new / statistics.median(t) for key, t in times.items()},
        "first_call_s": first,
        "speedup_over_default": over_default["median"],
        "speedup_over_default_range": [over_default["min"], over_default["max"]],
        "speedup_over_compiled": over_compiled["median"],
        "speedup_over_compiled_range": [over_compiled["min"], over_compiled["max"]],
    }


def render(results: dict[str, object]) -> str:
    m = results["machine"]
    lines = [
        "## Pretrained weights in: attnkit against transformers on the same weights (issue #35)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {results['threads']} torch threads, torch {m['torch']},"
        f" transformers {results['transformers']}. Reproduce: `python benchmarks/pretrained.py --rounds"
        f" {results['rounds']}`. Published configurations with random weights, imported with `attnkit.hf.load`;"
        f" medians over {results['rounds']} alternating rounds; the speed-up is the median of the per-round ratios.",
        "",
        "| model | params | max abs. difference | batch x length | transformers /s | attnkit /s | speed-up | range |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for row in results["rows"]:
        unit = "images" if row["model"].startswith("ViT") else "tokens"
        low, high = row["speedup_range"]
        lines.append(
            f"| {row['model']} | {row['parameters'] / 1e6:.0f}M | {row['max_abs_diff']:.1e} |"
            f" {row['batch']} x {row['length']} | {row['transformers_per_s']:,.0f} {unit} |"
            f" {row['attnkit_per_s']:,.0f} {unit} | {row['speedup']:.2f}× | {low:.2f}–{high:.2f} |"
        )
    for row in results["rows"]:
        for g in row.get("generation", []):
            if g is row["generation"][0]:
                lines += [
                    "",
                    f"{row['model']} greedy generation with the KV cache (16-token prompt,"
                    f" {g['new_tokens']} new tokens):",
                    "",
                    "| batch | transformers tokens/s | attnkit tokens/s | speed-up | range | same tokens |",
                    "|---:|---:|---:|---:|---|---|",
                ]
            low, high = g["speedup_range"]
            lines.append(
                f"| {g['batch']} | {g['transformers_tokens_per_s']:,.1f} | {g['attnkit_tokens_per_s']:,.1f} |"
                f" {g['speedup']:.2f}× | {low:.2f}–{high:.2f} | {'yes' if g['same_tokens'] else 'NO'} |"
            )
    for row in results["rows"]:
        c = row.get("compiled")
        if not c:
            continue
        speed, first = c["tokens_per_s"], c["first_call_s"]
        lines += [
            "",
            f"{row['model']} at batch 1 with compiled decoding steps ({c['new_tokens']} new tokens; attnkit:"
            " `attnkit generate --compile`; transformers: static cache, `CompileConfig`). Tokens per second"
            " after the first call, which builds the graphs (its seconds in brackets):",
            "",
            "| transformers | transformers compiled | attnkit compiled | attnkit compiled / transformers |"
            " attnkit compiled / transformers compiled | same tokens |",
            "|---:|---:|---:|---:|---:|---|",
            f"| {speed['transformers']:.1f} | {speed['transformers compiled']:.1f}"
            f" [{first['transformers compiled']:.0f} s] | {speed['attnkit compiled']:.1f}"
            f" [{first['attnkit compiled']:.0f} s] | {c['speedup_over_default']:.2f}×"
            f" ({c['speedup_over_default_range'][0]:.2f}–{c['speedup_over_default_range'][1]:.2f}) |"
            f" {c['speedup_over_compiled']:.2f}× ({c['speedup_over_compiled_range'][0]:.2f}–"
            f"{c['speedup_over_compiled_range'][1]:.2f}) | {'yes' if c['same_tokens'] else 'NO'} |",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--tiny", action="store_true", help="tiny models: a smoke run, nothing written")
    args = parser.parse_args()
    import transformers

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name, (ref, shape) in _models(args.tiny).items():
        print(f"{name}: ...", flush=True)
        rows.append(measure_model(name, ref, shape, args.rounds))
        print(f"  {rows[-1]}", flush=True)
    results = {
        "machine": machine(),
        "threads": args.threads,
        "rounds": args.rounds,
        "transformers": transformers.__version__,
        "target_max_abs_diff": TARGET_DIFF,
        "rows": rows,
    }
    print(render(results))
    if not args.tiny:
        write_json("pretrained", results)
        write_section("pretrained", render(results))


if __name__ == "__main__":
    main()
