"""`attnkit train mlm`, then a classifier started from it with --init."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
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


@pytest.fixture(scope="module")
def tiny_mlm_run(tmp_path_factory):
    """One tiny pre-training run, shared by the --init tests (a test that changes it works on a copy)."""
    root = tmp_path_factory.mktemp("mlm")
    text = root / "corpus.txt"
    text.write_text("\n".join(t for t, _ in make_texts(120, seed=13)) + "\n")
    run = root / "run"
    assert main(["train", "mlm", "--text", str(text), "--out", str(run), "--epochs", "1", *TINY_MODEL]) == 0
    return run


def test_init_copies_the_whole_encoder(tiny_mlm_run):
    """--init starts the classifier's body from the masked-LM run's weights, tensor for tensor."""
    from safetensors.torch import load_file

    from attnkit.errors import UserError
    from attnkit.models import TextClassifier, TextEncoderConfig
    from attnkit.tasks.classify import load_encoder

    mlm_run = tiny_mlm_run
    config = TextEncoderConfig.from_dict(json.loads((mlm_run / "config.json").read_text())["model"])
    torch.manual_seed(5)
    model = TextClassifier(config, 3)
    load_encoder(model, mlm_run)
    saved = load_file(str(mlm_run / "model.safetensors"))
    body = model.body.state_dict()
    assert set(body) == {k.removeprefix("body.") for k in saved if k.startswith("body.")}
    for name, tensor in body.items():
        assert torch.equal(tensor, saved[f"body.{name}"]), name
    wider = TextClassifier(TextEncoderConfig.from_dict({**config.to_dict(), "d_model": 64}), 3)
    with pytest.raises(UserError, match="do not fit"):
        load_encoder(wider, mlm_run)


def test_init_from_a_run_whose_weights_do_not_fit_fails_cleanly(tiny_mlm_run, tmp_path, capsys):
    """A run whose config.json no longer matches its weights: one error line, exit code 2."""
    mlm_run = Path(shutil.copytree(tiny_mlm_run, tmp_path / "mlm"))
    config_path = mlm_run / "config.json"
    saved = json.loads(config_path.read_text())
    saved["model"]["d_ff"] = 2 * saved["model"]["d_ff"]
    config_path.write_text(json.dumps(saved))
    capsys.readouterr()
    train = write_csv(tmp_path / "train.csv", make_texts(90, seed=12))
    args = ["train", "classify", "--train", str(train), "--out", str(tmp_path / "cls"), "--init", str(mlm_run)]
    assert main([*args, "--epochs", "1", *TINY_MODEL]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "do not fit" in err
    assert not (tmp_path / "cls" / "config.json").exists()  # no half-made run to refuse the next try
