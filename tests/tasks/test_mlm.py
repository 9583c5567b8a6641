"""`attnkit train mlm`, then a classifier started from it with --init."""

from __future__ import annotations

import json

import torch

from attnkit.cli import main
from attnkit.data.tokenizer import CLS_ID, MASK_ID, PAD_ID
from attnkit.tasks.mlm import mask_tokens
from tests.fixtures import TINY_MODEL, make_texts, write_csv


def test_masking_follows_bert():
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (64, 50))
    ids[:, 0] = CLS_ID
    ids[:, 40:] = PAD_ID
    inputs, targets = mask_tokens(ids, 100, 0.15, torch.Generator().manual_seed(1))
    chosen = targets != -100
    assert not chosen[:, 0].any() and not chosen[:, 40:].any()  # never [CLS] or padding
    share = chosen[:, 1:40].float().mean().item()
    assert 0.12 < share < 0.18
    assert torch.equal(targets[chosen], ids[chosen])
    masked = (inputs == MASK_ID) & chosen
    assert 0.7 < masked.sum().item() / chosen.sum().item() < 0.9
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_pretrain_then_fine_tune(tmp_path, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(t for t, _ in make_texts(200, seed=11)) + "\n")
    mlm_run = tmp_path / "mlm"
    args = ["train", "mlm", "--text", str(text), "--out", str(mlm_run), "--epochs", "1", *TINY_MODEL]
    assert main(args) == 0
    metrics = json.loads((mlm_run / "metrics.json").read_text())
    assert {"val_loss", "val_masked_accuracy"} <= set(metrics)
    train = write_csv(tmp_path / "train.csv", make_texts(90, seed=12))
    run = tmp_path / "cls"
    args = ["train", "classify", "--train", str(train), "--out", str(run), "--init", str(mlm_run), "--epochs", "1"]
    assert main([*args, *TINY_MODEL]) == 0
    assert (run / "tokenizer.json").read_text() == (mlm_run / "tokenizer.json").read_text()
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["d_model"] == 32
