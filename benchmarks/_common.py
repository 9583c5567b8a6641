"""What every benchmark shares: timing in alternating rounds, summaries, and writing results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def machine() -> dict[str, object]:
    """A description of where the figures were taken."""
    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d"),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_once(run: Callable[[], None], device: torch.device) -> float:
    """Seconds one call of `run` takes (synchronising CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def alternate(runs: dict[str, Callable[[], None]], rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Time every variant once per round, rotating the order, so background load hits each alike."""
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(time_once(runs[name], device))
    return times


def paired(
    runs: dict[str, Callable[[], None]], baseline: str, contender: str, rounds: int, device: torch.device
) -> dict[str, float]:
    """Warm every run up, time them in alternating rounds; NAME_ms medians and the speed-up.

    The speed-up is baseline time / contender time: the median of the per-round ratios, with their
    extremes as speedup_min and speedup_max.
    """
    for run in runs.values():
        run()  # warm-up
    times = alternate(runs, rounds, device)
    ratio = round_ratios(times[baseline], times[contender])
    medians = {f"{name}_ms": statistics.median(samples) * 1000 for name, samples in times.items()}
    return {**medians, "speedup": ratio["median"], "speedup_min": ratio["min"], "speedup_max": ratio["max"]}


def round_ratios(numerators: list[float], denominators: list[float]) -> dict[str, float]:
    """Median, min and max of the per-round ratios numerators[i] / denominators[i] (paired rounds)."""
    ratios = sorted(a / b for a, b in zip(numerators, denominators, strict=True))
    return {"median": statistics.median(ratios), "min": ratios[0], "max": ratios[-1]}


def summarise(samples: list[float]) -> dict[str, float]:
    """Median, quartiles and extremes in milliseconds."""
    ms = sorted(s * 1000 for s in samples)
    quartiles = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return {
        "median_ms": statistics.median(ms),
        "q1_ms": quartiles[0],
        "q3_ms": quartiles[2],
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "n": len(ms),
    }


def write_json(name: str, payload: dict[str, object]) -> Path:
    """Write benchmarks/results/NAME.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def write_section(name: str, markdown: str) -> None:
    """Replace (or add) the section NAME of BENCHMARKS.md, between its start/end markers."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}\n"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# attnkit benchmarks\n\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        text = before + block + ("\n" + after if after else "")
    else:
        text = text.rstrip() + "\n\n" + block
    BENCHMARKS_MD.write_text(text)


def matmul_ceiling(device: torch.device, size: int = 2048, rounds: int = 10) -> float:
    """Measured fp32 GFLOP/s of a large square matmul: the ceiling attention is compared with."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    times = [time_once(lambda: a @ b, device) for _ in range(rounds)]
    return 2 * size**3 / statistics.median(times) / 1e9


def transformers_cpu_compile_config():
    """A transformers `CompileConfig` for `generate(..., compile_config=...)` that compiles on a CPU too:
    transformers compiles only on accelerators unless a private flag of the config says otherwise."""
    from transformers import CompileConfig

    config = CompileConfig(mode="default")
    config._compile_all_devices = True
    return config
