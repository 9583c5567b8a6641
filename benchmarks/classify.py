"""News classification on Reuters-21578 R8/R52 (issue #3): attnkit against the usual alternatives.

In one run on this machine: test accuracy and wall time of attnkit's presets; TF-IDF + logistic
regression and TF-IDF word 1-2-grams + LinearSVC (scikit-learn) on the same raw text; and a
same-size `torch.nn.TransformerEncoder` classifier trained by the same engine on the same tokens,
data and steps (for training tokens per second). Optionally the masked-LM route: pre-train once on
the corpus's unlabelled stories (never the test ones), then fine-tune. Also THUCNews titles
trained on the dev split and tested on the test split (not comparable with 180k-train numbers).

    ATTNKIT_DATA=../shared/data python benchmarks/classify.py [--only r8] [--skip-mlm | --mlm-run DIR] [--seeds 3]

`--only r90` runs the multi-label set alone (the 90 ModApte topics): micro- and macro-F1 of the
`reuters_90` preset beside one-vs-rest TF-IDF + LinearSVC; its figures are kept beside the others.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attnkit.data.datasets import load_classification
from attnkit.engine import TrainConfig
from attnkit.engine.history import read_history
from attnkit.models.classifier import drop_tokens
from attnkit.options import build, load_preset
from attnkit.tasks import classify, mlm
from benchmarks._common import machine, write_json, write_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "classify.json"
PUBLISHED = {
    "reuters_r8": {"Text GCN (Yao et al. 2019)": 97.07, "fastText": 96.13, "TF-IDF+LR": 93.74},
    "reuters_r52": {"Text GCN (Yao et al. 2019)": 93.56, "fastText": 92.81, "TF-IDF+LR": 86.95},
}
TARGETS = {"reuters_r8": 97.5, "reuters_r52": 94.5}
PUBLISHED_R90 = "SVM (Yang & Liu 1999): micro-F1 85.99, macro-F1 52.51"


def linear_multilabel() -> dict[str, float]:
    """One-vs-rest TF-IDF 1-2-grams + LinearSVC on the 90-topic multi-label set."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer
    from sklearn.svm import LinearSVC

    splits = load_classification("reuters_90")
    start = time.perf_counter()
    binarizer = MultiLabelBinarizer()
    train_y = binarizer.fit_transform([label.split("|") for label in splits.train.labels])
    test_y = binarizer.transform([label.split("|") for label in splits.test.labels])
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = OneVsRestClassifier(LinearSVC()).fit(vectorizer.fit_transform(splits.train.texts), train_y)
    predicted = model.predict(vectorizer.transform(splits.test.texts))
    result = {
        "micro_f1": 100 * f1_score(test_y, predicted, average="micro"),
        "macro_f1": 100 * f1_score(test_y, predicted, average="macro", zero_division=0),
        "accuracy": 100 * accuracy_score(test_y, predicted),
        "seconds": time.perf_counter() - start,
    }
    print(f"reuters_90: TF-IDF 1-2-grams + LinearSVC (one-vs-rest): micro-F1 {result['micro_f1']:.2f}", flush=True)
    return result


def run_multilabel(out: Path) -> dict[str, object]:
    """The reuters_90 preset beside the linear one-vs-rest baseline."""
    preset_values = load_preset(str(ROOT / "configs" / "classify" / "reuters_90.yaml"))
    given = {"out": str(out), "progress": False, "threads": 2}
    options = build(classify.ClassifyOptions, preset_values, given)
    train_config = build(TrainConfig, classify.TRAIN_DEFAULTS, preset_values, given)
    start = time.perf_counter()
    metrics = classify.train(options, train_config, log=lambda m: print(f"  {m}", flush=True))
    ours = {k: 100 * metrics[k] for k in ("micro_f1", "macro_f1", "accuracy")}
    return {"linear": linear_multilabel(), "attnkit": {**ours, "seconds": time.perf_counter() - start}}


def linear_baselines(dataset: str) -> dict[str, dict[str, float]]:
    """TF-IDF + LogisticRegression and TF-IDF 1-2-grams + LinearSVC on the raw text."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    splits = load_classification(dataset)
    results = {}
    for name, vectorizer, model in [
        (
            "TF-IDF + LogisticRegression",
            TfidfVectorizer(sublinear_tf=True),
            LogisticRegression(max_iter=2000, C=10),
        ),
        ("TF-IDF 1-2-grams + LinearSVC", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LinearSVC()),
    ]:
        start = time.perf_counter()
        features = vectorizer.fit_transform(splits.train.texts)
        model.fit(features, splits.train.labels)
        predicted = model.predict(vectorizer.transform(splits.test.texts))
        accuracy = sum(p == t for p, t in zip(predicted, splits.test.labels, strict=True)) / len(predicted)
        results[name] = {"accuracy": 100 * accuracy, "seconds": time.perf_counter() - start}
        print(f"{dataset}: {name}: {100 * accuracy:.2f}% in {results[name]['seconds']:.1f}s", flush=True)
    return results


class TorchEncoderClassifier(nn.Module):
    """The same shape as attnkit's TextClassifier, built from torch.nn.TransformerEncoder."""

    def __init__(self, config, n_classes: int, token_dropout: float = 0.0) -> None:
        super().__init__()
        self.pad_id = config.pad_id
        self.token_dropout = token_dropout
        self.embed = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_id)
        self.pos = nn.Parameter(torch.randn(config.max_len, config.d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            config.d_model,
            config.n_heads,
            config.d_ff,
            config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=config.norm_first,
        )
        self.encoder = nn.TransformerEncoder(
            layer, config.n_layers, norm=nn.LayerNorm(config.d_model), enable_nested_tensor=False
        )
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(config.d_model, n_classes)

    def forward(self, ids: Tensor) -> Tensor:
        if self.training and self.token_dropout > 0:  # the preset's word dropout, as in TextClassifier
            ids = drop_tokens(ids, self.token_dropout, self.pad_id)
        keep = ids != self.pad_id
        x = self.embed(ids) + self.pos[: ids.size(1)]
        hidden = self.encoder(x, src_key_padding_mask=~keep)
        weights = keep.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.head(self.dropout(pooled))


def run_attnkit(
    dataset: str,
    out: Path,
    *,
    init: Path | None = None,
    model_factory=None,
    preset: str | None = None,
    seed: int = 0,
) -> dict[str, float]:
    preset_values = load_preset(str(ROOT / "configs" / "classify" / f"{preset or dataset}.yaml"))
    given = {"out": str(out), "dataset": dataset, "progress": False, "threads": 2, "seed": seed}
    if init is not None:
        given["init"] = str(init)
    options = build(classify.ClassifyOptions, preset_values, given)
    train_config = build(TrainConfig, classify.TRAIN_DEFAULTS, preset_values, given)
    start = time.perf_counter()
    metrics = classify.train(
        options, train_config, log=lambda m: print(f"  {m}", flush=True), model_factory=model_factory
    )
    seconds = time.perf_counter() - start
    rates = [row["tokens_per_s"] for row in read_history(out / "history.csv")]
    return {
        "accuracy": 100 * metrics["accuracy"],
        "macro_f1": 100 * metrics["macro_f1"],
        "seconds": seconds,
        "tokens_per_s": sorted(rates)[len(rates) // 2],
    }


def run_seeds(dataset: str, out: Path, seeds: int, **kwargs) -> dict[str, object]:
    """A preset trained with seeds 0..seeds-1 (`kwargs` go to `run_attnkit`): accuracy and macro-F1 are
    medians over the seeds; time and tokens/s are seed 0's (every seed trains the same steps)."""
    runs = []
    for seed in range(seeds):
        print(f"{dataset}: attnkit {kwargs.get('preset') or 'preset'}, seed {seed}", flush=True)
        name = out if seed == 0 else out.with_name(f"{out.name}-seed{seed}")
        runs.append(run_attnkit(dataset, name, seed=seed, **kwargs))
    return {
        **runs[0],
        "accuracy": statistics.median(r["accuracy"] for r in runs),
        "macro_f1": statistics.median(r["macro_f1"] for r in runs),
        "seed_accuracies": [r["accuracy"] for r in runs],
    }


def run_mlm(out: Path, preset: str) -> dict[str, float]:
    preset_values = load_preset(str(ROOT / "configs" / "mlm" / f"{preset}.yaml"))
    given = {"out": str(out), "progress": False, "threads": 2}
    options = build(mlm.MlmOptions, preset_values, given)
    train_config = build(TrainConfig, mlm.TRAIN_DEFAULTS, preset_values, given)
    start = time.perf_counter()
    metrics = mlm.train(options, train_config, log=lambda m: print(f"  {m}", flush=True))
    return {**metrics, "seconds": time.perf_counter() - start}


def reuse_mlm(run: Path) -> dict[str, float]:
    """A finished pre-training run's validation figures and its training time (history.csv's last row)."""
    metrics = json.loads((run / "metrics.json").read_text())
    return {**metrics, "seconds": float(read_history(run / "history.csv")[-1]["elapsed_s"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["r8", "r52", "r90"], help="one dataset only")
    parser.add_argument("--skip-mlm", action="store_true", help="leave out the pre-training route")
    parser.add_argument(
        "--mlm-run",
        help="fine-tune from this finished `train mlm` run (made with configs/mlm/reuters.yaml) instead of "
        "pre-training again; its time is read from its history.csv",
    )
    parser.add_argument("--skip-thucnews", action="store_true")
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="train the attnkit preset (and fine-tune the pre-trained encoder) with this many seeds; report medians",
    )
    parser.add_argument("--out", default="runs/bench-classify", help="where the runs go")
    args = parser.parse_args()
    if args.mlm_run and not (Path(args.mlm_run) / "metrics.json").is_file():
        parser.error(f"--mlm-run {args.mlm_run}: not a finished `attnkit train mlm` run (no metrics.json)")
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    previous = RESULTS.read_text() if RESULTS.exists() else None
    if args.only == "r90":  # the multi-label set alone, kept beside the earlier single-label figures
        results = json.loads(previous) if previous else {"machine": machine(), "datasets": {}}
        print("reuters_90 (multi-label): attnkit preset", flush=True)
        results["multilabel"] = run_multilabel(out / f"reuters_90-{time.strftime('%H%M%S')}")
        write_json("classify", results)
        write_section("classify", render(results))
        return
    datasets = [f"reuters_{args.only}"] if args.only else ["reuters_r8", "reuters_r52"]
    command = " ".join(["python benchmarks/classify.py", *sys.argv[1:]])
    results: dict[str, object] = {"machine": machine(), "datasets": {}, "command": command}
    earlier = json.loads(previous) if previous else {}
    if "multilabel" in earlier:
        results["multilabel"] = earlier["multilabel"]
    if args.only:  # one dataset re-measured: the others keep their figures and the command that made them
        for name, entry in earlier.get("datasets", {}).items():
            entry.setdefault("command", earlier.get("command"))
            entry.setdefault("date", earlier.get("machine", {}).get("date"))
            results["datasets"][name] = entry
        if "thucnews" in earlier:
            results["thucnews"] = earlier["thucnews"]
    mlm_result = None
    mlm_dir = Path(args.mlm_run) if args.mlm_run else out / "mlm"
    if args.mlm_run and not args.skip_mlm:
        mlm_result = reuse_mlm(mlm_dir)
        results["mlm"] = mlm_result
    elif not args.skip_mlm:
        print("masked-LM pre-training on Reuters' unlabelled stories", flush=True)
        mlm_result = run_mlm(mlm_dir, "reuters")
        results["mlm"] = mlm_result
    for dataset in datasets:
        stamp = time.strftime("%H%M%S")
        entry: dict[str, object] = {"command": command, "date": results["machine"]["date"]}
        entry["linear"] = linear_baselines(dataset)
        entry["attnkit"] = run_seeds(dataset, out / f"{dataset}-{stamp}", args.seeds)
        print(f"{dataset}: torch.nn.TransformerEncoder, same data and steps", flush=True)
        entry["torch_encoder"] = run_attnkit(
            dataset,
            out / f"{dataset}-torch-{stamp}",
            model_factory=lambda config, n, token_dropout=0.0, **_: TorchEncoderClassifier(config, n, token_dropout),
        )
        if mlm_result is not None:
            print(f"{dataset}: fine-tuning the pre-trained encoder", flush=True)
            entry["attnkit_mlm"] = run_seeds(
                dataset, out / f"{dataset}-mlm-{stamp}", args.seeds, init=mlm_dir, preset=f"{dataset}_finetune"
            )
        results["datasets"][dataset] = entry
        write_json("classify", results)
    if not args.skip_thucnews:
        print("thucnews_title: train on dev, test on test", flush=True)
        results["thucnews"] = run_thucnews(out / f"thucnews-{time.strftime('%H%M%S')}")
    write_json("classify", results)
    write_section("classify", render(results))
    print("wrote benchmarks/results/classify.json and BENCHMARKS.md")


def run_thucnews(out: Path) -> dict[str, float]:
    from attnkit.data.datasets import dataset_dir

    folder = dataset_dir("thucnews_title")
    preset_values = load_preset(str(ROOT / "configs" / "classify" / "thucnews_title.yaml"))
    given = {
        "out": str(out),
        "train": str(folder / "dev.txt.gz"),
        "test": str(folder / "test.txt.gz"),
        "class_names": str(folder / "class.txt"),
        "progress": False,
        "threads": 2,
    }
    preset_values.pop("dataset", None)
    options = build(classify.ClassifyOptions, preset_values, given)
    train_config = build(TrainConfig, classify.TRAIN_DEFAULTS, preset_values, given)
    start = time.perf_counter()
    metrics = classify.train(options, train_config, log=lambda m: print(f"  {m}", flush=True))
    return {"accuracy": 100 * metrics["accuracy"], "seconds": time.perf_counter() - start}


def _attnkit_label(row: dict[str, object], route: str) -> str:
    seeds = row.get("seed_accuracies", [])
    if len(seeds) < 2:
        return f"attnkit TextClassifier ({route})"
    listed = " / ".join(f"{a:.2f}" for a in seeds)
    return f"attnkit TextClassifier ({route}; median of {len(seeds)} seeds: {listed})"


def _verdict(name: str, row: dict[str, object], target: float, linear_best: float) -> str:
    met = row["accuracy"] >= target and row["accuracy"] > linear_best
    return (
        f"{name} {row['accuracy']:.2f} against the target {target} and the best linear model of the same run "
        f"{linear_best:.2f}, {'met' if met else 'missed'}"
    )


def render(results: dict[str, object]) -> str:
    info = results["machine"]
    lines = [
        "## News classification (issue #3)",
        "",
        f"`ATTNKIT_DATA=../shared/data {results.get('command', 'python benchmarks/classify.py')}` on "
        f"{info['cpu']}, 2 threads, "
        f"torch {info['torch']}, {info['date']}. Test accuracy (%) on the ModApte test split; wall time of "
        "training and evaluation. Linear models on the raw text, in the same run.",
        "",
        "| dataset | model | accuracy | macro-F1 | time | training tokens/s |",
        "|---|---|---|---|---|---|",
    ]
    mlm_seconds = results.get("mlm", {}).get("seconds")
    verdicts: list[str] = []
    for dataset, entry in results["datasets"].items():
        for name, row in entry["linear"].items():
            lines.append(f"| {dataset} | {name} | {row['accuracy']:.2f} | – | {row['seconds']:.0f} s | – |")
        for key, label in (
            ("attnkit", _attnkit_label(entry["attnkit"], "preset, from scratch")),
            ("torch_encoder", "torch.nn.TransformerEncoder, same tokens/data/steps"),
            ("attnkit_mlm", _attnkit_label(entry.get("attnkit_mlm", {}), "masked-LM pre-trained, then fine-tuned")),
        ):
            if key in entry:
                row = entry[key]
                extra = f" (+{mlm_seconds:.0f} s pre-training, once)" if key == "attnkit_mlm" and mlm_seconds else ""
                lines.append(
                    f"| {dataset} | {label} | {row['accuracy']:.2f} | {row['macro_f1']:.2f} | "
                    f"{row['seconds']:.0f} s{extra} | {row['tokens_per_s']:,.0f} |"
                )
        ours, theirs = entry["attnkit"], entry["torch_encoder"]
        lines.append(
            f"| {dataset} | *tokens/s ratio attnkit / torch* | | | | "
            f"**{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}×** (target ≥ 1.3×) |"
        )
        published = ", ".join(f"{k} {v}" for k, v in PUBLISHED[dataset].items())
        best = max(
            [r["accuracy"] for r in entry["linear"].values()]
            + [ours["accuracy"]]
            + ([entry["attnkit_mlm"]["accuracy"]] if "attnkit_mlm" in entry else [])
        )
        lines.append(
            f"| {dataset} | *published: {published}; target ≥ {TARGETS[dataset]}* | best here {best:.2f} | | | |"
        )
        linear_best = max(r["accuracy"] for r in entry["linear"].values())
        verdict = f"{dataset}: " + _verdict("from scratch", ours, TARGETS[dataset], linear_best)
        if "attnkit_mlm" in entry:
            verdict += "; " + _verdict("pre-trained", entry["attnkit_mlm"], TARGETS[dataset], linear_best)
        verdicts.append(verdict)
    lines += [
        "",
        "Targets (attnkit's figure, the median when several seeds ran; the issue counts either route, "
        "the pre-training time reported apart): " + ". ".join(verdicts) + ".",
    ]
    commands = {d: e.get("command") for d, e in results["datasets"].items()}
    if any(c and c != results.get("command") for c in commands.values()):
        lines.append(
            "The rows of each dataset come from their own run: "
            + "; ".join(f"{d}: `{c}` ({results['datasets'][d].get('date', '')})" for d, c in commands.items() if c)
            + "."
        )
    if "mlm" not in results:
        lines.append("The masked-LM pre-training route was left out of this run (`--skip-mlm`).")
    else:
        pre = results["mlm"]
        lines.append(
            f"Masked-LM pre-training (`configs/mlm/reuters.yaml`, once, on the ModApte training and unused stories, "
            f"never a test one): {pre['seconds'] / 60:.1f} min, validation masked-token accuracy "
            f"{100 * pre['val_masked_accuracy']:.1f}%; each fine-tuning run starts from it with "
            "`configs/classify/<dataset>_finetune.yaml`."
        )
    if "multilabel" in results:
        ours, linear = results["multilabel"]["attnkit"], results["multilabel"]["linear"]
        lines += [
            "",
            "Multi-label, `reuters_90` (the 90 ModApte topics, 7,770 train / 3,019 test stories; "
            "`python benchmarks/classify.py --only r90`):",
            "",
            "| model | micro-F1 | macro-F1 | exact match | time |",
            "|---|---|---|---|---|",
            f"| TF-IDF 1-2-grams + LinearSVC, one-vs-rest | {linear['micro_f1']:.2f} | {linear['macro_f1']:.2f} | "
            f"{linear['accuracy']:.2f} | {linear['seconds']:.0f} s |",
            f"| attnkit TextClassifier, `configs/classify/reuters_90.yaml` | {ours['micro_f1']:.2f} | "
            f"{ours['macro_f1']:.2f} | {ours['accuracy']:.2f} | {ours['seconds']:.0f} s |",
            f"| *published: {PUBLISHED_R90}* | | | | |",
        ]
    if "thucnews" in results:
        row = results["thucnews"]
        lines += [
            "",
            f"THUCNews titles, trained on the 10k **dev** split and tested on the test split: "
            f"{row['accuracy']:.2f}% in {row['seconds']:.0f} s. Not comparable with published numbers, "
            "which train on the 180k split that is not available here.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
