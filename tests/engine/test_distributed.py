"""DDP on CPU (gloo): two processes end with identical weights, and metrics reduced across ranks
equal a single process's on the same data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from tests.fixtures import TINY_MODEL, make_texts, write_csv

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from attnkit.engine import TrainConfig, Trainer, setup, teardown
    from tests.engine.toy import ToyTask, toy_batches, toy_model

    where = setup("cpu")
    torch.manual_seed(0)
    trainer = Trainer(
        toy_model(),
        ToyTask(),
        TrainConfig(epochs=2, batch_size=8, warmup_steps=2, progress=False, metric="mse"),
        Path(out) / "run",
        toy_batches(64, shuffle=True),
        toy_batches(37, shuffle=False, seed=9),
        where,
        log=lambda _m: None,
    )
    trainer.fit()
    metrics = trainer.evaluate(toy_batches(37, shuffle=False, seed=9))
    weights = {k: v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(weights, str(Path(out) / f"rank{rank}.safetensors"))
    (Path(out) / f"metrics{rank}.txt").write_text(repr(sorted(metrics.items())))
    teardown()


def test_two_processes_agree(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = load_file(str(tmp_path / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "rank1.safetensors"))
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert (tmp_path / "metrics0.txt").read_text() == (tmp_path / "metrics1.txt").read_text()

    # The same weights evaluated by one process on the same data give the same metrics.
    from attnkit.engine import Dist, TrainConfig, Trainer
    from tests.engine.toy import ToyTask, toy_batches, toy_model

    model = toy_model()
    model.load_state_dict(rank0)
    single = Trainer(
        model,
        ToyTask(),
        TrainConfig(progress=False),
        tmp_path / "single",
        toy_batches(64, shuffle=True),
        None,
        Dist(),
        log=lambda _m: None,
    )
    expected = single.evaluate(toy_batches(37, shuffle=False, seed=9))
    reduced = dict(eval((tmp_path / "metrics0.txt").read_text()))
    for key, value in expected.items():
        assert abs(reduced[key] - value) < 1e-6, key
    assert not (tmp_path / "run" / "rank1").exists()


def test_torchrun_cli_two_processes(tmp_path):
    """`torchrun --nproc_per_node=2 -m attnkit train classify ...`: runs, and only rank 0 writes."""
    train = write_csv(tmp_path / "train.csv", make_texts(120, seed=1))
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port",
            str(_free_port()),
            "-m",
            "attnkit",
            "train",
            "classify",
            "--train",
            str(train),
            "--out",
            str(run),
            "--epochs",
            "2",
            "--device",
            "cpu",
            *TINY_MODEL,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "model.safetensors").is_file()
    assert (run / "metrics.json").is_file()
    assert result.stdout.count("validation: held out") == 1  # rank 0 alone prints
