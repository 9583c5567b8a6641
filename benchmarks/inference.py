"""CPU translation speed (issue #36): attnkit against CTranslate2 and transformers on the same weights.

A Marian model (transformers' MarianMTModel) of the Multi30k preset's architecture (d_model 256, 3 + 3
layers, 4 heads, d_ff 1024, ReLU, an 8,000-piece shared vocabulary) with random weights is saved with
`save_pretrained`; attnkit imports it (`attnkit import hf`), CTranslate2 converts it
(`ctranslate2.converters.TransformersConverter`). Every engine then translates the same random
sources (12 pieces and eos) with greedy search and beam 4, every output forced to 16 tokens (eos
held back until then: attnkit's `min_len`, CTranslate2's `min_decoding_length`, transformers'
`min_new_tokens`), at batch 1 (sentences one at a time) and batch 64:

- attnkit through `attnkit.tasks.translate.decoding.translate_ids` (what `attnkit predict` calls),
  float32 and `--precision int8` / `bf16`;
- CTranslate2 float32 and int8 (`compute_type`);
- transformers' `generate`, float32;
- onnxruntime on attnkit's exported generation graphs, searched by the same `translate_ids` through
  `OnnxStepper` (what `attnkit serve --backend onnx` does for a translate run).

Each engine runs in a process of its own (two OpenMP pools in one process on 2 cores disturb each
other) at 1 and at 2 threads, the better one reported; rounds alternate the processes; figures are
medians over rounds of generated tokens per second. The float32 outputs of every engine are compared
token for token with attnkit's. A profile of attnkit's batch-1 step follows: aten operators per
generated token, the time of the step's matrix-vector products alone, and the time to read every
weight once at the machine's measured memory bandwidth.

Target: attnkit >= 1.0x CTranslate2 at every batch size and precision (float32 against float32,
int8 against int8).

    python benchmarks/inference.py [--rounds 5] [--tiny] [--render-only]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import RESULTS, machine, write_json, write_section

SOURCE_LEN = 12  # pieces per source, eos added
OUTPUT_LEN = 16  # tokens every engine generates
SENTENCES_B1 = 8  # sentences translated one at a time per timed batch-1 call
BATCHES = (1, 64)
BEAMS = (1, 4)
THREADS = (1, 2)
ENGINES = {  # name -> (engine, precision)
    "attnkit fp32": ("attnkit", "fp32"),
    "attnkit int8": ("attnkit", "int8"),
    "attnkit bf16": ("attnkit", "bf16"),
    "CTranslate2 fp32": ("ct2", "float32"),
    "CTranslate2 int8": ("ct2", "int8"),
    "transformers fp32": ("hf", "fp32"),
    "onnxruntime fp32": ("ort", "fp32"),  # attnkit's exported generation graphs (`serve --backend onnx`)
}
PAIRS = [
    ("attnkit fp32", "CTranslate2 fp32"),
    ("attnkit int8", "CTranslate2 int8"),
    ("onnxruntime fp32", "CTranslate2 fp32"),
]


# ------------------------------------------------------------------------------------------ setup


def build(folder: Path, tiny: bool) -> None:
    """folder/marian (save_pretrained + tokenizer files), folder/run (attnkit), folder/ct2, folder/sources.json."""
    import io

    import sentencepiece
    import transformers

    vocab_size = 8000
    marian = folder / "marian"
    marian.mkdir(parents=True)
    words = [f"w{i}" for i in range(400)]
    generator = torch.Generator().manual_seed(0)
    texts = [" ".join(words[j] for j in torch.randint(0, 400, (12,), generator=generator)) for _ in range(2000)]
    pieces: set[str] = set()
    for name in ("source", "target"):
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=500, minloglevel=2, hard_vocab_limit=False
        )
        (marian / f"{name}.spm").write_bytes(model.getvalue())
        processor = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
        pieces |= {processor.id_to_piece(i) for i in range(processor.get_piece_size())}
    vocab = ["</s>", "<unk>", *sorted(pieces - {"<unk>", "<s>", "</s>"})]
    vocab += [f"▁x{i}" for i in range(vocab_size - 1 - len(vocab))] + ["<pad>"]  # pad last, as OPUS-MT
    (marian / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    tokenizer = transformers.MarianTokenizer(
        source_spm=str(marian / "source.spm"), target_spm=str(marian / "target.spm"), vocab=str(marian / "vocab.json")
    )
    sizes = dict(d_model=256, encoder_layers=3, decoder_layers=3, encoder_ffn_dim=1024, decoder_ffn_dim=1024)
    if tiny:
        sizes = dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64)
    config = transformers.MarianConfig(
        vocab_size=vocab_size,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        max_position_embeddings=128,
        activation_function="relu",
        scale_embedding=True,
        pad_token_id=vocab_size - 1,
        decoder_start_token_id=vocab_size - 1,
        eos_token_id=0,
        forced_eos_token_id=None,
        **sizes,
    )
    torch.manual_seed(0)
    model = transformers.MarianMTModel(config).eval()  # transformers' own initialisation; pad row zero
    model.save_pretrained(marian)
    tokenizer.save_pretrained(marian)
    subprocess.run(
        [sys.executable, "-m", "attnkit", "import", "hf", str(marian), "--out", str(folder / "run")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    import ctranslate2

    ctranslate2.converters.TransformersConverter(str(marian)).convert(str(folder / "ct2"))
    subprocess.run(
        [sys.executable, "-m", "attnkit", "export", "onnx", str(folder / "run"), "--out", str(folder / "onnx")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    ids = torch.randint(1, vocab_size - 1, (64, SOURCE_LEN), generator=generator).tolist()
    (folder / "sources.json").write_text(json.dumps({"ids": [[*row, 0] for row in ids], "vocab": vocab}))


# ----------------------------------------------------------------------------------------- workers


def worker(engine: str, precision: str, folder: Path, reps: int) -> dict[str, object]:
    """Time every (batch, beam, threads) cell of one engine in this process; the outputs of each cell."""
    data = json.loads((folder / "sources.json").read_text())
    sources, vocab = data["ids"], data["vocab"]
    translate, set_threads = _engine(engine, precision, folder, vocab)
    cells = []
    for threads in THREADS:
        set_threads(threads)
        for beam in BEAMS:
            for batch in BATCHES:
                rows = sources[:SENTENCES_B1] if batch == 1 else sources[:batch]

                def call(rows=rows, batch=batch, beam=beam) -> list[list[int]]:
                    out = []
                    for start in range(0, len(rows), batch):
                        out += translate(rows[start : start + batch], beam)
                    return out

                outputs = call()  # warm-up
                times = []
                for _ in range(reps):
                    start = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - start)
                tokens = sum(len(row) for row in outputs)
                cells.append(
                    {"threads": threads, "beam": beam, "batch": batch, "tokens_per_s": tokens / min(times)}
                    | {"outputs": outputs}
                )
    return {"cells": cells}


def _engine(engine: str, precision: str, folder: Path, vocab: list[str]):
    """(translate(rows of source ids, beam) -> rows of OUTPUT_LEN target ids, set_threads(n))."""
    if engine == "ct2":
        import ctranslate2

        translators: dict[int, object] = {}

        def set_threads(n: int) -> None:
            translators.setdefault(
                n, ctranslate2.Translator(str(folder / "ct2"), compute_type=precision, intra_threads=n)
            )
            translators["now"] = translators[n]

        index = {token: i for i, token in enumerate(vocab)}

        def translate(rows: list[list[int]], beam: int) -> list[list[int]]:
            results = translators["now"].translate_batch(
                [[vocab[i] for i in row] for row in rows],
                beam_size=beam,
                max_decoding_length=OUTPUT_LEN,
                min_decoding_length=OUTPUT_LEN,
                max_batch_size=len(rows),
            )
            return [[index[t] for t in r.hypotheses[0]] for r in results]

        return translate, set_threads

    if engine == "ort":  # attnkit's exported graphs, through the decoding `attnkit serve --backend onnx` uses
        from attnkit.export.generation import OnnxGenerator, OnnxStepper
        from attnkit.runs import open_run

        model = open_run(folder / "run").model  # its ids and sizes; the steps run in onnxruntime
        generators: dict[int, OnnxGenerator] = {}

        def set_threads(n: int) -> None:
            torch.set_num_threads(n)  # the search's own tensor work
            generators.setdefault(n, OnnxGenerator(folder / "onnx", threads=n))
            generators[0] = generators[n]

        def translate(rows: list[list[int]], beam: int) -> list[list[int]]:
            return _translate_ids(model, rows, beam, stepper=lambda src: OnnxStepper(generators[0], src))

        return translate, set_threads

    if engine == "hf":
        import transformers

        model = transformers.MarianMTModel.from_pretrained(str(folder / "marian")).eval()
        pad = model.config.pad_token_id

        def translate(rows: list[list[int]], beam: int) -> list[list[int]]:
            with torch.inference_mode():
                out = model.generate(
                    input_ids=torch.tensor(rows),
                    attention_mask=torch.ones(len(rows), len(rows[0]), dtype=torch.long),
                    num_beams=beam,
                    do_sample=False,
                    min_new_tokens=OUTPUT_LEN,
                    max_new_tokens=OUTPUT_LEN,
                    bad_words_ids=[[pad]],
                    early_stopping=True,
                )
            return out[:, 1:].tolist()

        return translate, torch.set_num_threads

    from attnkit.runs import open_run

    model = open_run(folder / "run", precision=precision).model
    return (lambda rows, beam: _translate_ids(model, rows, beam)), torch.set_num_threads


def _translate_ids(model, rows: list[list[int]], beam: int, stepper=None) -> list[list[int]]:
    """attnkit's public decoding (`translate_ids`, as `attnkit predict` calls it), every output held to
    OUTPUT_LEN tokens; `stepper` as translate_ids's (None: eager PyTorch)."""
    from attnkit.tasks.translate.decoding import translate_ids

    return translate_ids(
        model,
        rows,
        search="greedy" if beam == 1 else "beam",
        beam=beam,
        alpha=1.0,
        penalty="length",
        extra_len=OUTPUT_LEN - len(rows[0]),  # limit = source length + extra_len = OUTPUT_LEN
        min_len=OUTPUT_LEN,
        batch_size=len(rows),
        stepper=stepper,
    )


# ----------------------------------------------------------------------------------------- profile


def profile(folder: Path) -> dict[str, float]:
    """attnkit's batch-1 greedy step at 1 thread: operators per token, matrix-vector time, bandwidth bound."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from attnkit.nn.packed import PackedLinear
    from attnkit.runs import open_run
    from attnkit.tasks.translate.decoding import translate_ids

    torch.set_num_threads(1)
    model = open_run(folder / "run").model
    row = json.loads((folder / "sources.json").read_text())["ids"][:1]

    def one() -> None:
        translate_ids(model, row, search="greedy", extra_len=OUTPUT_LEN - len(row[0]), min_len=OUTPUT_LEN)

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    one()
    with Count():
        one()
    times = []
    for _ in range(20):
        start = time.perf_counter()
        one()
        times.append(time.perf_counter() - start)
    step_ms = statistics.median(times) / OUTPUT_LEN * 1000

    # The matrix products of one decoder step at batch 1, alone: every decoder weight and the output layer.
    shapes = []
    for layer in model.decoder.layers:
        d = layer.self_attn.d_model
        d_ff = layer.ffn.up_proj.out_features
        shapes += [(3 * d, d), (d, d), (d, d), (d, d), (d_ff, d), (d, d_ff)]
    shapes.append(tuple(model.lm_head.weight.shape))
    weights = [torch.randn(shape) for shape in shapes]
    x = {shape[1]: torch.randn(1, shape[1]) for shape in shapes}

    def products() -> None:
        for w in weights:
            torch.nn.functional.linear(x[w.shape[1]], w)

    transposed = [w.t().contiguous() for w in weights]  # (in, out): another kernel at one row

    def products_transposed() -> None:
        for w in transposed:
            torch.mm(x[w.shape[0]], w)

    packed = []
    for w in weights:
        layer = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        layer.weight.data = w
        packed.append(PackedLinear.from_linear(layer))

    def products_packed() -> None:  # what the run's own layers do (`attnkit.nn.packed`)
        with torch.inference_mode():
            for layer in packed:
                layer(x[layer.in_features])

    matvec, matvec_t, matvec_p = [], [], []
    products(), products_transposed(), products_packed()
    for _ in range(50):
        for run, times in ((products, matvec), (products_transposed, matvec_t), (products_packed, matvec_p)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    weight_bytes = sum(w.numel() * 4 for w in weights)
    big = torch.empty(64 * 2**20)  # 256 MiB: far beyond the caches
    copy = torch.empty_like(big)
    bandwidth = []
    for _ in range(5):
        start = time.perf_counter()
        copy.copy_(big)
        bandwidth.append(2 * big.numel() * 4 / (time.perf_counter() - start))  # read + write
    bandwidth_gbs = max(bandwidth) / 1e9
    return {
        "step_ms": step_ms,
        "ops_per_token": Count.calls / OUTPUT_LEN,
        "matvec_ms": statistics.median(matvec) * 1000,
        "matvec_transposed_ms": statistics.median(matvec_t) * 1000,
        "matvec_packed_ms": statistics.median(matvec_p) * 1000,
        "weight_mb": weight_bytes / 1e6,
        "bandwidth_gbs": bandwidth_gbs,
        "bandwidth_bound_ms": weight_bytes / (bandwidth_gbs * 1e9) * 1000,
    }


# -------------------------------------------------------------------------------------------- main


def run_worker(name: str, folder: Path, reps: int) -> dict[str, object]:
    engine, precision = ENGINES[name]
    command = [sys.executable, __file__, "--worker", engine, "--precision", precision, "--dir", str(folder)]
    out = subprocess.run([*command, "--reps", str(reps)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def collect(folder: Path, rounds: int, reps: int) -> dict[str, object]:
    """Every engine once per round (order rotated), each in its own process."""
    names = list(ENGINES)
    samples: dict[str, dict[tuple, list[float]]] = {name: {} for name in names}
    outputs: dict[str, dict[tuple, list]] = {name: {} for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            for cell in run_worker(name, folder, reps)["cells"]:
                key = (cell["batch"], cell["beam"], cell["threads"])
                samples[name].setdefault(key, []).append(cell["tokens_per_s"])
                outputs[name][key] = cell["outputs"]
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    table = {}
    for name in names:
        for batch in BATCHES:
            for beam in BEAMS:
                by_threads = {t: statistics.median(samples[name][(batch, beam, t)]) for t in THREADS}
                best = max(by_threads, key=by_threads.get)
                spread = samples[name][(batch, beam, best)]
                reference = outputs["attnkit fp32"][(batch, beam, 1)]
                mine = outputs[name][(batch, beam, best)]
                same = sum(a == b for a, b in zip(mine, reference, strict=True)) / len(reference)
                table[f"{name}|{batch}|{beam}"] = {
                    "tokens_per_s": by_threads[best],
                    "min": min(spread),
                    "max": max(spread),
                    "threads": best,
                    "by_threads": by_threads,
                    "same_as_attnkit_fp32": same,
                }
    return table


def render(results: dict[str, object]) -> str:
    m, table, prof = results["machine"], results["table"], results["profile"]
    lines = [
        "## CPU translation: attnkit against CTranslate2 on the same weights (issue #36)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, CTranslate2 {results['ctranslate2']}, "
        f"transformers {results['transformers']}. Reproduce: `python benchmarks/inference.py --rounds "
        f"{results['rounds']}`. A Marian model of the Multi30k preset's architecture (d_model 256, 3 + 3 layers, "
        "4 heads, d_ff 1024, 8,000 pieces) with random weights, imported by attnkit and converted by CTranslate2; "
        f"sources of {SOURCE_LEN} pieces + eos, every output forced to {OUTPUT_LEN} tokens; batch 1 = "
        f"{SENTENCES_B1} sentences one at a time. Generated tokens per second, median over {results['rounds']} "
        "rounds [min–max], each engine in its own process at its better thread count (shown); *same* = share "
        "of outputs identical to attnkit float32's.",
        "",
        "| engine | search | batch | tokens/s | threads | same |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, row in table.items():
        name, batch, beam = key.split("|")
        search = "greedy" if beam == "1" else f"beam {beam}"
        lines.append(
            f"| {name} | {search} | {batch} | {row['tokens_per_s']:,.0f} [{row['min']:,.0f}–{row['max']:,.0f}] "
            f"| {row['threads']} | {row['same_as_attnkit_fp32']:.0%} |"
        )
    lines += [
        "",
        "| attnkit path / CTranslate2 (same precision) | search | batch 1 | batch 64 |",
        "|---|---|---:|---:|",
    ]
    verdicts = []
    for ours, theirs in PAIRS:
        if f"{ours}|1|1" not in table:
            continue  # results from before that engine was measured
        for beam in BEAMS:
            ratios = [
                table[f"{ours}|{b}|{beam}"]["tokens_per_s"] / table[f"{theirs}|{b}|{beam}"]["tokens_per_s"]
                for b in BATCHES
            ]
            verdicts += ratios
            search = "greedy" if beam == 1 else f"beam {beam}"
            lines.append(f"| {ours} | {search} | {ratios[0]:.2f}× | {ratios[1]:.2f}× |")
    met = all(r >= 1.0 for r in verdicts)
    lines += [
        "",
        f"Target: attnkit ≥ 1.0× CTranslate2 at every batch size and precision: **{'met' if met else 'missed'}** "
        f"(lowest {min(verdicts):.2f}×, highest {max(verdicts):.2f}×, over attnkit's eager and onnxruntime paths).",
        "",
        f"Profile of attnkit's batch-1 greedy step (1 thread): {prof['step_ms']:.2f} ms per generated token, "
        f"{prof['ops_per_token']:.0f} aten operators per token; the step's matrix-vector products alone take "
        f"{prof['matvec_packed_ms']:.2f} ms with every weight oneDNN-packed (`PackedLinear`; the run packs "
        f"those of at least 256 x 1024); {prof['matvec_ms']:.2f} ms through `F.linear` on weights stored (out, in) as "
        f"`nn.Linear` keeps them, {prof['matvec_transposed_ms']:.2f} ms on the same weights stored (in, out)); "
        f"reading its {prof['weight_mb']:.1f} MB of float32 weights once at the "
        f"measured {prof['bandwidth_gbs']:.1f} GB/s copy bandwidth takes {prof['bandwidth_bound_ms']:.2f} ms.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3, help="timed calls per cell in each process (best kept)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model: a smoke run of the script")
    parser.add_argument("--render-only", action="store_true", help="re-render BENCHMARKS.md from the saved JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.precision, Path(args.dir), args.reps)))
        return
    if args.render_only:
        results = json.loads((RESULTS / "inference.json").read_text())
    else:
        try:
            import ctranslate2
            import transformers
        except ImportError as error:
            raise SystemExit(f"{error.name} is missing: pip install -e '.[bench,hf,onnx]'") from None

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            build(folder, args.tiny)
            table = collect(folder, args.rounds, args.reps)
            prof = profile(folder)
        results = {
            "machine": machine(),
            "ctranslate2": ctranslate2.__version__,
            "transformers": transformers.__version__,
            "rounds": args.rounds,
            "table": table,
            "profile": prof,
        }
        if args.tiny:
            print(render(results))
            return
        write_json("inference", results)
    print(render(results))
    write_section("inference", render(results))


if __name__ == "__main__":
    main()
