"""Serving (issue #36): throughput and latency of `attnkit serve` under load, loopback only.

For the classifier and the translator of the presets' sizes (the runs `benchmarks/explain.py`
builds: trained for one step; timing does not depend on the weights), the server runs in a process
of its own (`attnkit serve`, 2 torch threads); this process sends one-input requests at concurrency
1, 8 and 32 (a minimal asyncio HTTP/1.1 client on kept-alive connections), with micro-batching on
(--max-batch 32, --max-wait-ms 5) and off (--max-batch 1), and records each request's latency. The
baseline is a bare `run.records([x])` call in-process, with no server running.

Targets: at concurrency 32, micro-batching gives >= 3x the throughput of one-at-a-time; p99 latency
at concurrency 1 within 1.5x of the bare call.

    ATTNKIT_DATA=../shared/data python benchmarks/serve.py [--requests 96] [--tasks classify,translate]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
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
    """Send every sentence as its own request, `concurrency` at a time over as many kept-alive
    connections; throughput and latencies.

    A minimal HTTP/1.1 client on asyncio streams: the client shares the 2 cores with the server, and
    httpx spent 1.2-3.2 ms of CPU per request, as much as a small model's whole answer, so it
    measured itself as much as the server."""
    host, port, path = _split(url)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for sentence in sentences:
        queue.put_nowait(sentence)
    latencies: list[float] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while not queue.empty():
                body = json.dumps({"inputs": [queue.get_nowait()]}).encode()
                started = time.perf_counter()
                writer.write(
                    f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                status, answer = await _response(reader)
                if status != 200:
                    raise RuntimeError(f"the server answered {status}: {answer[:200]!r}")
                latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "requests_per_s": len(sentences) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        # The client shares the machine's cores with the server: its own CPU time per request.
        "client_cpu_ms": 1000 * cpu / len(sentences),
    }


def _split(url: str) -> tuple[str, int, str]:
    """http://HOST:PORT/PATH -> (HOST, PORT, /PATH)."""
    address, _, path = url.removeprefix("http://").partition("/")
    host, _, port = address.partition(":")
    return host, int(port), "/" + path


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length (as uvicorn sends JSON): (status, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:"))
    return status, await reader.readexactly(length)


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
                f"| {c} | {on['requests_per_s']:.1f} | {on['p50_ms']:.1f} | {on['p99_ms']:.1f} |"
                f" {off['requests_per_s']:.1f} | {off['p50_ms']:.1f} | {off['p99_ms']:.1f} |"
                f" {on['requests_per_s'] / off['requests_per_s']:.2f}× |"
            )
        client = [found[s][str(c)].get("client_cpu_ms") for s in SETTINGS for c in CONCURRENCY]
        if all(ms is not None for ms in client):
            lines += ["", f"The client used {min(client):.2f}–{max(client):.2f} ms of CPU per request."]
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
