"""GPT on tiny Shakespeare (issue #6): nanoGPT's CPU recipe, attnkit against a nanoGPT-equivalent, and generation speed.

1. Training, same budget for both, in one run: nanoGPT's CPU configuration for shakespeare_char
   (block 64, batch 12, 4 layers, 4 heads, 128 dims, 2,000 iterations, dropout 0, AdamW lr 1e-3
   with 100 warm-up steps and cosine decay to 1e-4, β2 0.99, weight decay 0.1, clip 1.0, no
   biases). attnkit trains with `attnkit train lm`; the baseline is nanoGPT's model and loop written
   out with plain `torch.nn` (a faithful copy of karpathy/nanoGPT's model.py and train.py logic).
   Both are scored on every window of the held-out 10%.
2. Greedy generation tokens per second at batch 1 and 8 on a same-size model, attnkit with and
   without its KV cache, and Hugging Face `transformers`' GPT-2 `generate` (randomly initialised,
   same sizes), in alternating rounds; and both compiled (attnkit's `compile=True` on fixed-size
   caches, transformers' static cache with `compile_config`).

    ATTNKIT_DATA=../shared/data python benchmarks/lm.py
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attnkit.data.datasets import data_root
from attnkit.decode import CausalLMStepper, greedy_decode
from attnkit.engine import TrainConfig
from attnkit.engine.history import read_history
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.tasks import lm
from benchmarks._common import machine, round_ratios, transformers_cpu_compile_config, write_json, write_section

ROOT = Path(__file__).resolve().parent.parent
RECIPE = {"max_len": 64, "batch_size": 12, "n_layers": 4, "n_heads": 4, "d_model": 128, "steps": 2000}
TUNED_LR = 3e-3  # nanoGPT's recipe is otherwise unchanged; its 1e-3 is what this tiny model undershoots with


# ---------------------------------------------------------------------------------------- nanoGPT


class NanoBlock(nn.Module):
    """nanoGPT's Block: x + attn(ln_1(x)); x + mlp(ln_2(x)), no biases."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d, bias=False)
        self.c_attn = nn.Linear(d, 3 * d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)
        self.ln_2 = nn.LayerNorm(d, bias=False)
        self.c_fc = nn.Linear(d, 4 * d, bias=False)
        self.mlp_proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    """nanoGPT's GPT with its initialisation (N(0, 0.02), residual projections / sqrt(2 n_layer))."""

    def __init__(self, vocab: int, block: int, layers: int, heads: int, d: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(block, d)
        self.h = nn.ModuleList(NanoBlock(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d, bias=False)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.wte.weight = self.lm_head.weight
        for name, p in self.named_parameters():
            if p.dim() > 1:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx, targets=None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def train_nanogpt(train_ids, valid_ids, vocab: int, seed: int, lr: float = 1e-3) -> dict[str, float]:
    """nanoGPT's train.py loop for the recipe: random windows, AdamW, warm-up + cosine to lr / 10, clipping."""
    r = RECIPE
    torch.manual_seed(seed)
    model = NanoGPT(vocab, r["max_len"], r["n_layers"], r["n_heads"], r["d_model"])
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(seed)

    def lr_at(it: int) -> float:
        if it < 100:
            return lr * (it + 1) / 101
        ratio = (it - 100) / (2000 - 100)
        return lr / 10 + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - lr / 10)

    started = time.perf_counter()
    model.train()
    for it in range(r["steps"]):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(it)
        ix = torch.randint(len(train_ids) - r["max_len"] - 1, (r["batch_size"],), generator=generator)
        x = torch.stack([train_ids[i : i + r["max_len"]] for i in ix]).long()
        y = torch.stack([train_ids[i + 1 : i + 1 + r["max_len"]] for i in ix]).long()
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    return {"val_loss": held_out_loss(model, valid_ids), "train_seconds": seconds}


@torch.no_grad()
def held_out_loss(model: nn.Module, ids: torch.Tensor) -> float:
    """Mean next-token loss over every non-overlapping window of the held-out tokens (as attnkit's)."""
    model.eval()
    block = RECIPE["max_len"]
    count = (len(ids) - 1) // block
    total = 0.0
    for start in range(0, count, 64):
        rows = range(start, min(start + 64, count))
        chunk = torch.stack([ids[i * block : i * block + block + 1] for i in rows]).long()
        logits = model(chunk[:, :-1])
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), chunk[:, 1:].reshape(-1), reduction="sum").item()
    return total / (count * block)


# ---------------------------------------------------------------------------------------- attnkit


def train_attnkit(text_path: Path, out: Path, seed: int, lr: float = 1e-3) -> dict[str, float]:
    r = RECIPE
    options = lm.LmOptions(
        out=str(out),
        text=str(text_path),
        max_len=r["max_len"],
        d_model=r["d_model"],
        n_heads=r["n_heads"],
        n_layers=r["n_layers"],
        dropout=0.0,
        bias=False,
        tokenizer="char",
    )
    config = TrainConfig(
        **{
            **lm.TRAIN_DEFAULTS,
            "batch_size": r["batch_size"],
            "lr": lr,
            "max_steps": r["steps"],
            "eval_every": 1000,
            "grad_clip": 1.0,
            "seed": seed,
            "progress": False,
        }
    )
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    metrics = lm.train(options, config, log=lambda m: print(f"  {m}", flush=True))
    rows = read_history(out / "history.csv")
    return {
        "val_loss": metrics["val_loss"],
        "train_seconds": rows[-1]["elapsed_s"],
        "total_seconds": time.perf_counter() - started,
    }


# ---------------------------------------------------------------------------------------- generation


def generation_speed(vocab: int, new_tokens: int, rounds: int, compiled: bool) -> dict[str, dict[str, float]]:
    """Greedy tokens/s of same-size random models: attnkit (cache on/off) and HF GPT-2 generate; with
    `compiled`, also each one's compiled step on a fixed-size cache (attnkit's `compile=True`,
    transformers' static cache with `compile_config`)."""
    r = RECIPE
    context = 256
    torch.manual_seed(0)
    ours = GPT(
        GPTConfig(
            vocab_size=vocab,
            max_len=context,
            d_model=r["d_model"],
            n_heads=r["n_heads"],
            n_layers=r["n_layers"],
            bias=False,
            activation="gelu_tanh",  # GPT-2's GELU, as the transformers model below has it
        )
    ).eval()
    runs = {}
    for batch in (1, 8):
        start = torch.randint(0, vocab, (batch, 1))
        for cache, compile in ((True, False), (False, False)) + (((True, True),) if compiled else ()):
            name = f"attnkit, batch {batch}, " + ("compiled" if compile else f"cache {'on' if cache else 'off'}")
            runs[name] = (
                lambda s=start, c=cache, k=compile: greedy_decode(
                    CausalLMStepper(ours, use_cache=c, max_len=context, compile=k),
                    s,
                    eos_id=None,
                    max_new_tokens=new_tokens,
                    pad_id=None,
                ),
                batch,
            )
    try:
        from transformers import GPT2Config, GPT2LMHeadModel

        hf = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab,
                n_positions=context,
                n_embd=r["d_model"],
                n_layer=r["n_layers"],
                n_head=r["n_heads"],
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
            )
        ).eval()
        compile_config = transformers_cpu_compile_config()
        for batch in (1, 8):
            start = torch.randint(0, vocab, (batch, 1))
            for static in (False, True) if compiled else (False,):
                name = f"transformers GPT-2 generate, batch {batch}" + (", static cache compiled" if static else "")
                extra = dict(cache_implementation="static", compile_config=compile_config) if static else {}
                runs[name] = (
                    lambda s=start, e=extra: hf.generate(
                        s,
                        attention_mask=torch.ones_like(s),
                        max_new_tokens=new_tokens,
                        min_new_tokens=new_tokens,
                        do_sample=False,
                        pad_token_id=0,
                        **e,
                    ),
                    batch,
                )
    except ImportError:
        print("transformers is not installed: `pip install transformers` for the comparison", flush=True)
    times: dict[str, list[float]] = {name: [] for name in runs}
    first: dict[str, float] = {}
    with torch.inference_mode():
        for name, (run, _batch) in runs.items():
            started = time.perf_counter()
            run()  # warm-up; the compiled generators build their graphs here
            first[name] = time.perf_counter() - started
            print(f"{name}: first run {first[name]:.1f} s", flush=True)
        # Each round times, batch by batch, attnkit with and without its cache and transformers back to
        # back (in a rotating order), so each round's ratios compare runs seconds apart: on a shared
        # machine the load drifts more between rounds than within one.
        for i in range(rounds):
            for batch in (1, 8):
                names = [name for name, (_, size) in runs.items() if size == batch]
                names = names[i % len(names) :] + names[: i % len(names)]
                for name in names:
                    run = runs[name][0]
                    started = time.perf_counter()
                    run()
                    times[name].append(batch * new_tokens / (time.perf_counter() - started))
    return {
        name: {
            "tokens_per_s": statistics.median(v),
            "min": min(v),
            "max": max(v),
            "first_run_s": first[name],
            "rounds": v,
        }
        for name, v in times.items()
    }


def paired_ratio(gen: dict[str, dict], numerator: str, denominator: str) -> dict[str, float] | None:
    """Median, min and max over rounds of numerator's tokens/s over denominator's in the same round."""
    if numerator not in gen or denominator not in gen:
        return None
    return round_ratios(gen[numerator]["rounds"], gen[denominator]["rounds"])


def render(results: dict[str, object]) -> str:
    m, a, n = results["machine"], results["attnkit"], results["nanogpt"]
    lines = [
        "## GPT language model: tiny Shakespeare (issue #6)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}. Reproduce: `ATTNKIT_DATA=../shared/data"
        " python benchmarks/lm.py`. nanoGPT's CPU recipe for shakespeare_char (block 64, batch 12, 4 layers,"
        " 4 heads, 128 dims, 2,000 iterations, dropout 0, no biases, AdamW lr 1e-3 → 1e-4 cosine); the held-out"
        " 10% scored over every window.",
        "",
        "| | validation loss | training time |",
        "|---|---:|---:|",
        f"| attnkit (`attnkit train lm`), nanoGPT's learning rate 1e-3 | {a['val_loss']:.4f} |"
        f" {a['train_seconds']:.0f} s |",
        f"| nanoGPT's model and loop in plain torch.nn, same run, lr 1e-3 | {n['val_loss']:.4f} |"
        f" {n['train_seconds']:.0f} s |",
        "| nanoGPT's README (its machine, 20-batch estimate) | 1.88 | about 3 min |",
    ]
    if "attnkit_tuned" in results:
        at, nt = results["attnkit_tuned"], results["nanogpt_tuned"]
        lines += [
            f"| attnkit, learning rate {TUNED_LR:g} (warm-up and cosine as above) | **{at['val_loss']:.4f}** |"
            f" {at['train_seconds']:.0f} s |",
            f"| nanoGPT's model and loop, learning rate {TUNED_LR:g}, same run | {nt['val_loss']:.4f} |"
            f" {nt['train_seconds']:.0f} s |",
            "",
            f"At learning rate {TUNED_LR:g} attnkit reaches {at['val_loss']:.4f}"
            f" ({'meets' if at['val_loss'] <= 1.85 else 'misses'} ≤ 1.85) in"
            f" {at['train_seconds'] / nt['train_seconds']:.2f}× nanoGPT's training time; the gain over 1e-3 is the"
            f" recipe's, not the implementation's: nanoGPT's own model and loop at {TUNED_LR:g} reach"
            f" {nt['val_loss']:.4f}.",
        ]
    lines += [
        "",
        "Target: ≤ 1.85 in no more time than nanoGPT.",
        "",
        f"Greedy generation, {results['new_tokens']} new tokens from a 1-token prompt, same-size randomly initialised"
        f" models (context 256), tokens/s over {results['rounds']} rounds; each round runs the generators of one batch"
        " size back to back, and the ratios below are the median (and range) of the per-round ratios:",
        "",
        "| generator | tokens/s (median) | min | max | first run (warm-up, compiling) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in results["generation"].items():
        first = f"{row['first_run_s']:.1f} s" if "first_run_s" in row else ""
        lines.append(f"| {name} | {row['tokens_per_s']:.0f} | {row['min']:.0f} | {row['max']:.0f} | {first} |")
    gen = results["generation"]
    for batch in (1, 8):
        ours = f"attnkit, batch {batch}, cache on"
        hf = paired_ratio(gen, ours, f"transformers GPT-2 generate, batch {batch}")
        off = paired_ratio(gen, ours, f"attnkit, batch {batch}, cache off")
        versus = (
            f"{hf['median']:.2f}× transformers (rounds {hf['min']:.2f}–{hf['max']:.2f}; target ≥ 2×:"
            f" {'met' if hf['median'] >= 2 else 'missed'})"
            if hf
            else "transformers not run"
        )
        cache = f"{off['median']:.2f}× attnkit without it" if off else "cache off not run"
        lines.append("")
        lines.append(f"Batch {batch}: attnkit with its cache runs at {versus} and {cache}.")
        compiled = paired_ratio(gen, f"attnkit, batch {batch}, compiled", f"transformers GPT-2 generate, batch {batch}")
        both = paired_ratio(
            gen,
            f"attnkit, batch {batch}, compiled",
            f"transformers GPT-2 generate, batch {batch}, static cache compiled",
        )
        if compiled and both:
            lines.append(
                f"Compiled (`compile=True`, `attnkit generate --compile`), attnkit runs at {compiled['median']:.2f}×"
                f" transformers' default generate (rounds {compiled['min']:.2f}–{compiled['max']:.2f}) and at"
                f" {both['median']:.2f}× transformers' own compiled static-cache generate (rounds"
                f" {both['min']:.2f}–{both['max']:.2f})."
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="runs/bench-lm")
    parser.add_argument(
        "--generation-only", action="store_true", help="re-time generation only; keep the training figures"
    )
    parser.add_argument(
        "--compiled",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time each generator's compiled step (attnkit's compile=True, transformers' static cache);"
        " compiling takes a minute or two",
    )
    args = parser.parse_args()
    folder = data_root() / "tinyshakespeare"
    text_path = next((p for p in (folder / "input.txt", folder / "input.txt.gz") if p.exists()), None)
    if text_path is None:
        sys.exit(f"no input.txt(.gz) in {folder}: set ATTNKIT_DATA to the folder holding tinyshakespeare/")
    text = lm.read_text(str(text_path))
    cut = int(len(text) * 0.9)
    codec = lm.Codec.train("char", text[:cut], 0)
    train_ids = torch.tensor(codec.encode(text[:cut]))
    valid_ids = torch.tensor(codec.encode(text[cut:]))
    saved = ROOT / "benchmarks" / "results" / "lm.json"
    results: dict[str, object] = json.loads(saved.read_text()) if args.generation_only else {}
    results.update(machine=machine(), new_tokens=args.new_tokens, rounds=args.rounds)
    if not args.generation_only:
        print("attnkit, nanoGPT's learning rate", flush=True)
        results["attnkit"] = train_attnkit(text_path, ROOT / args.out / "shakespeare-char", args.seed)
        print("nanoGPT-equivalent", flush=True)
        results["nanogpt"] = train_nanogpt(train_ids, valid_ids, codec.vocab_size, args.seed)
        print(f"attnkit and nanoGPT-equivalent at learning rate {TUNED_LR:g}", flush=True)
        results["attnkit_tuned"] = train_attnkit(
            text_path, ROOT / args.out / "shakespeare-char-tuned", args.seed, TUNED_LR
        )
        results["nanogpt_tuned"] = train_nanogpt(train_ids, valid_ids, codec.vocab_size, args.seed, TUNED_LR)
        print(results, flush=True)
    results["generation"] = generation_speed(codec.vocab_size, args.new_tokens, args.rounds, args.compiled)
    write_json("lm", results)
    write_section("lm", render(results))
    print(render(results))


if __name__ == "__main__":
    main()
