"""Serving (issue #36): throughput and latency of `attnkit serve` under load, loopback only.

For the classifier and the translator of the presets' sizes (the runs `benchmarks/explain.py`
builds: trained for one step; timing does not depend on the weights), the server runs in a process
of its own (`attnkit serve`, 2 torch threads); this process sends one-input requests at concurrency
1, 8 and 32 (asyncio + httpx), with micro-batching on (--max-batch 32, --max-wait-ms 5) and off
(--max-batch 1), and records each request's latency. The baseline is a bare `run.records([x])`
call in-process, with no server running.

Targets: at concurrency 32, micro-batching gives >= 3x the throughput of one-at-a-time; p99 latency
at concurrency 1 within 1.5x of the bare call.

    ATTNKIT_DATA=../shared/data python benchmarks/serve.py [--requests 96] [--tasks classify,translate]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attnkit.data.datasets import data_root
from attnkit.runs import open_run
from benchmarks._common import machine, write_json, write_section
from benchmarks.explain import TEXT, preset_runs

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 8, 32)
SETTINGS = {"batching": ["--max-batch", "32", "--max-wait-ms", "5"], "one at a time": ["--max-batch", "1"]}


def inputs(task: str, count: int) -> list[str]:
    """`count` different one-sentence inputs: Reuters-style texts, or Multi30k test sources."""
    if task == "translate":
        with gzip.open(data_root() / "multi30k" / "raw" / "test_2016_flickr.de.gz", "rt") as handle:
            lines = [line.strip() for line in handle]
        return [lines[i % len(lines)] for i in range(count)]
    words = TEXT.split()
    return [" ".join(words[: 10 + i % (len(words) - 10)]) + f" ({i})" for i in range(count)]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def bare_latency(run_dir: Path, sentences: list[str]) -> dict[str, float]:
    """`run.records([x])` in this process, one input at a time (no server running)."""
    torch.set_num_threads(2)
    run = open_run(run_dir)
    run.records(sentences[:2])  # warm-up
    times = []
    for sentence in sentences:
        started = time.perf_counter()
        run.records([sentence])
        times.append(time.perf_counter() - started)
    return {"p50_ms": 1000 * statistics.median(times), "p99_ms": 1000 * percentile(times, 0.99)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def load(url: str, sentences: list[str], concurrency: int) -> dict[str, float]:
    """Send every sentence as its own request, `concurrency` at a time; throughput and latencies."""
    import httpx

    queue: asyncio.Queue[str] = asyncio.Queue()
    for sentence in sentences:
        queue.put_nowait(sentence)
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def worker() -> None:
            while not queue.empty():
                sentence = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post(url, json={"inputs": [sentence]})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {
        "requests_per_s": len(sentences) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
    }


def measure(run_dir: Path, sentences: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    found: dict[str, dict[str, dict[str, float]]] = {}
    for name, flags in SETTINGS.items():
        port = free_port()
        command = [sys.executable, "-m", "attnkit.cli", "serve", str(run_dir), "--port", str(port), *flags]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        try:
            import httpx

            for _ in range(600):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            url = f"http://127.0.0.1:{port}/v1/predict"
            asyncio.run(load(url, sentences[:8], 4))  # warm-up
            found[name] = {str(c): asyncio.run(load(url, sentences, c)) for c in CONCURRENCY}
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(f"  {name}: {found[name]}", flush=True)
    return found


def render(results: dict) -> str:
    m = results["machine"]
    lines = [
        "## Serving: `attnkit serve` under load (issue #36)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; server and client on the same machine"
        f" (loopback). Reproduce: `ATTNKIT_DATA=../shared/data python benchmarks/serve.py --requests"
        f" {results['requests']}`. Models of the presets' sizes; {results['requests']} one-input requests per"
        " cell; micro-batching: --max-batch 32 --max-wait-ms 5; one at a time: --max-batch 1.",
    ]
    for task, found in results["tasks"].items():
        bare = found["bare"]
        lines += [
            "",
            f"{task}: a bare `run.records([x])` in-process takes {bare['p50_ms']:.1f} ms (p50),"
            f" {bare['p99_ms']:.1f} ms (p99).",
            "",
            "| concurrency | batching req/s | p50 ms | p99 ms | one at a time req/s | p50 ms | p99 ms |"
            " throughput ratio |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in CONCURRENCY:
            on, off = found["batching"][str(c)], found["one at a time"][str(c)]
            lines.append(
                f"| {c} | {on['requests_per_s']:.1f} | {on['p50_ms']:.0f} | {on['p99_ms']:.0f} |"
                f" {off['requests_per_s']:.1f} | {off['p50_ms']:.0f} | {off['p99_ms']:.0f} |"
                f" {on['requests_per_s'] / off['requests_per_s']:.2f}× |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    parser.add_argument("--tasks", default="classify,translate")
    parser.add_argument("--runs", default="runs/bench-explain", help="where the preset-sized runs are (or go)")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    runs = preset_runs(ROOT / args.runs, tasks)
    results = {"machine": machine(), "requests": args.requests, "tasks": {}}
    for task in tasks:
        run_dir = runs[task][0]
        sentences = inputs(task, args.requests)
        print(f"{task}: bare calls", flush=True)
        found = {"bare": bare_latency(run_dir, sentences[:32])}
        found.update(measure(run_dir, sentences))
        results["tasks"][task] = found
    print(render(results))
    write_json("serve", results)
    write_section("serve", render(results))


if __name__ == "__main__":
    main()
