"""`attnkit import hf`: a checkpoint becomes an ordinary run directory, and the run commands give what
transformers gives on the same weights and inputs (its own tokenizer and image processor included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from attnkit.cli import main
from attnkit.runs import open_run
from tests.hf.models import randomise, tiny_marian

transformers = pytest.importorskip("transformers", reason="the import tests need transformers (extra: hf)")

TEXT = ["the quick brown fox jumps over the lazy dog", "a small model reads a small text", "to be or not to be"] * 20


def _byte_bpe(vocab_size: int = 300) -> Tokenizer:
    """A GPT-2-style byte-level BPE trained here (transformers 5's GPT2TokenizerFast(vocab_file=...)
    builds an empty tokenizer, so it gets the tokenizer object instead)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(TEXT, trainer=trainer)
    return tokenizer


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    tokenizer = transformers.GPT2TokenizerFast(tokenizer_object=_byte_bpe(), eos_token="<|endoftext|>")
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=64, activation_function="gelu_new"
    )
    model = randomise(transformers.GPT2LMHeadModel(config))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def test_gpt2_imports_as_an_lm_run_that_generates_as_transformers_does(gpt2_folder, tmp_path, capsys):
    folder, ref, tokenizer = gpt2_folder
    run = tmp_path / "run"
    assert main(["import", "hf", str(folder), "--out", str(run)]) == 0
    assert "imported gpt2" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "lm" and config["source"]["model_type"] == "gpt2"
    prompt = "the quick brown"
    assert main(["generate", str(run), "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "12"]) == 0
    printed = capsys.readouterr().out
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = ref.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert printed == prompt + tokenizer.decode(expected[0, ids.size(1) :]) + "\n"
    opened = open_run(run)  # and the run's forward is the model's
    with torch.no_grad():
        torch.testing.assert_close(opened.forward(opened.encode([prompt])), ref(ids).logits, atol=1e-5, rtol=0)


def test_an_import_never_overwrites_a_run(gpt2_folder, tmp_path, capsys):
    folder, _, _ = gpt2_folder
    run = tmp_path / "run"
    assert main(["import", "hf", str(folder), "--out", str(run)]) == 0
    before = (run / "model.safetensors").read_bytes()
    assert main(["import", "hf", str(folder), "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "classify"], "a gpt2 checkpoint imports as lm, not classify"),
        (["--num-labels", "1"], "--num-labels must be at least 2, got 1"),
    ],
)
def test_bad_import_requests_are_one_line(gpt2_folder, tmp_path, capsys, args, message):
    folder, _, _ = gpt2_folder
    assert main(["import", "hf", str(folder), "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_folder_without_a_tokenizer_is_refused(gpt2_folder, tmp_path, capsys):
    folder, _, _ = gpt2_folder
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((folder / name).read_bytes())
    assert main(["import", "hf", str(bare), "--out", str(tmp_path / "run")]) == 2
    assert "no tokenizer.json" in capsys.readouterr().err


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit")
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        image_size=16,
        patch_size=4,
        id2label={0: "cat", 1: "dog", 2: "fox"},
        label2id={"cat": 0, "dog": 1, "fox": 2},
    )
    model = randomise(transformers.ViTForImageClassification(config))
    processor = transformers.ViTImageProcessor(
        size={"height": 16, "width": 16}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


def test_vit_imports_as_a_vision_run_that_predicts_as_transformers_does(vit_folder, tmp_path, capsys):
    from PIL import Image

    folder, ref, processor = vit_folder
    run = tmp_path / "run"
    assert main(["import", "hf", str(folder), "--out", str(run)]) == 0
    image = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 256, size=(24, 20, 3), dtype=np.uint8)  # resized to 16 x 16
    Image.fromarray(pixels).save(image)
    opened = open_run(run)
    assert opened.classes == ["cat", "dog", "fox"]
    with torch.no_grad():
        expected = ref(**processor(Image.open(image), return_tensors="pt")).logits.softmax(-1)[0]
        got = opened.forward(opened.encode([str(image)])).softmax(-1)[0]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert main(["predict", str(run), str(image), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()[-3:]
    best = ["cat", "dog", "fox"][int(expected.argmax())]
    assert lines[0].strip().startswith(best)


def test_an_imported_vision_run_evaluates_on_a_folder(vit_folder, tmp_path, capsys):
    from PIL import Image

    folder, _, _ = vit_folder
    run = tmp_path / "run"
    assert main(["import", "hf", str(folder), "--out", str(run)]) == 0
    assert main(["evaluate", str(run)]) == 2
    assert "give --data-dir" in capsys.readouterr().err
    rng = np.random.default_rng(1)
    for name in ("cat", "dog", "fox"):
        (tmp_path / "eval" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(
                tmp_path / "eval" / name / f"{i}.png"
            )
    assert main(["evaluate", str(run), "--data-dir", str(tmp_path / "eval")]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    files = sorted((tmp_path / "eval").glob("*/*.png"))
    predicted = [ranked[0][0] for ranked in open_run(run).predict([str(f) for f in files])]
    right = sum(label == f.parent.name for label, f in zip(predicted, files, strict=True))
    assert metrics["accuracy"] == pytest.approx(right / len(files))


def test_an_imported_vit_fine_tunes_on_new_classes_through_the_cli(vit_folder, tmp_path, capsys):
    """`train vision --init` on an imported ViT: grey images of two new classes, the model's own size,
    channels and normalisation, every weight but the output layer from the import, and it learns."""
    from PIL import Image
    from safetensors.torch import load_file

    folder, _, _ = vit_folder
    imported, data = tmp_path / "vit", tmp_path / "data"
    assert main(["import", "hf", str(folder), "--out", str(imported)]) == 0
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for name, level in (("dark", 40), ("light", 215)):
            (data / split / name).mkdir(parents=True)
            for i in range(count):  # 20 x 20 grey images: resized to the model's 16 x 16, repeated to RGB
                pixels = np.clip(rng.normal(level, 25, size=(20, 20)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, mode="L").save(data / split / name / f"{i}.png")
    common = ["train", "vision", "--dataset", "folder", "--data-dir", str(data), "--init", str(imported)]
    common += ["--valid-size", "0", "--batch-size", "8", "--augment", "none"]
    assert main([*common, "--out", str(tmp_path / "still"), "--max-steps", "1", "--lr", "1e-12"]) == 0
    assert main([*common, "--out", str(tmp_path / "tuned"), "--max-steps", "40", "--lr", "3e-3"]) == 0
    capsys.readouterr()
    config, theirs = (json.loads((d / "config.json").read_text()) for d in (tmp_path / "tuned", imported))
    assert config["classes"] == ["dark", "light"] and config["normalize"] == theirs["normalize"]
    assert config["model"] == {**theirs["model"], "n_classes": 2}
    before, after = load_file(imported / "model.safetensors"), load_file(tmp_path / "still" / "model.safetensors")
    assert after["head.weight"].shape == (2, 32)
    for name, tensor in before.items():
        if not name.startswith("head."):
            torch.testing.assert_close(after[name], tensor, atol=1e-6, rtol=0)
    assert json.loads((tmp_path / "tuned" / "metrics.json").read_text())["accuracy"] == 1.0
    image = str(data / "test" / "light" / "0.png")
    assert open_run(tmp_path / "tuned").predict([image])[0][0][0] == "light"


def test_vision_init_refuses_another_image_size(vit_folder, tmp_path, capsys):
    folder, _, _ = vit_folder
    imported = tmp_path / "vit"
    assert main(["import", "hf", str(folder), "--out", str(imported)]) == 0
    args = ["train", "vision", "--dataset", "folder", "--data-dir", str(tmp_path), "--init", str(imported)]
    assert main([*args, "--image-size", "32", "--out", str(tmp_path / "x")]) == 2
    assert "--image-size 32: the initial model takes 16x16 images" in capsys.readouterr().err


def test_an_imported_lm_run_scores_a_text_file_as_transformers_does(gpt2_folder, tmp_path, capsys):
    folder, ref, tokenizer = gpt2_folder
    run = tmp_path / "run"
    assert main(["import", "hf", str(folder), "--out", str(run)]) == 0
    assert main(["evaluate", str(run)]) == 2
    assert "give --text FILE" in capsys.readouterr().err
    text = tmp_path / "text.txt"
    text.write_text("\n".join(TEXT[:12]) + "\n")
    assert main(["evaluate", str(run), "--text", str(text)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ids = tokenizer(text.read_text().removesuffix("\n"), return_tensors="pt").input_ids[0]
    window = 64  # the model's context: every whole window of the text, without overlap
    starts = range(0, (len(ids) - 1) // window * window, window)
    x = torch.stack([ids[o : o + window] for o in starts])
    y = torch.stack([ids[o + 1 : o + window + 1] for o in starts])
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(ref(x).logits.transpose(1, 2), y)
    assert metrics["val_loss"] == pytest.approx(float(expected), abs=1e-5)


def test_an_imported_gpt2_fine_tunes_through_the_cli(gpt2_folder, tmp_path, capsys):
    """`train lm --init` on an imported GPT-2 keeps its tokenizer and model, starts from its weights
    (a negligible step leaves its generation as it was) and learns the new text."""
    folder, _, _ = gpt2_folder
    imported, text = tmp_path / "gpt2", tmp_path / "text.txt"
    assert main(["import", "hf", str(folder), "--out", str(imported)]) == 0
    text.write_text("\n".join(TEXT) + "\n")
    common = ["train", "lm", "--text", str(text), "--init", str(imported), "--max-len", "32", "--batch-size", "8"]
    assert main([*common, "--out", str(tmp_path / "still"), "--max-steps", "1", "--lr", "1e-12"]) == 0
    learn = ["--max-steps", "60", "--lr", "1e-2", "--warmup-steps", "0"]
    assert main([*common, "--out", str(tmp_path / "tuned"), *learn]) == 0
    capsys.readouterr()
    config, theirs = (json.loads((d / "config.json").read_text()) for d in (tmp_path / "tuned", imported))
    assert config["model"] == theirs["model"] and config["options"]["tokenizer"] == "bytebpe"
    assert (tmp_path / "tuned" / "tokenizer.json").read_text() == (imported / "tokenizer.json").read_text()

    def generated(run):
        assert main(["generate", str(run), "--prompt", "the quick", "--temperature", "0", "--max-new-tokens", "8"]) == 0
        return capsys.readouterr().out

    assert generated(tmp_path / "still") == generated(imported)

    def loss(run):
        assert main(["evaluate", str(run), "--text", str(text)]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["val_loss"]

    assert loss(tmp_path / "tuned") < 0.7 * loss(imported)


def test_lm_init_refuses_runs_of_other_tasks(tmp_path, capsys, copy_run):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(TEXT) + "\n")
    classify = copy_run("classify")
    assert main(["train", "lm", "--text", str(text), "--init", str(classify), "--out", str(tmp_path / "x")]) == 2
    assert "is a classify run; start from an lm run" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------- BERT

NEWS = [
    ("stocks rallied as markets rose", "finance"),
    ("the bank raised interest rates", "finance"),
    ("shares fell on weak profits", "finance"),
    ("the striker scored a late goal", "sport"),
    ("the team won the cup final", "sport"),
    ("a record run in the marathon", "sport"),
]
SPECIALS = [
    "[PAD]",
    "[unused0]",
    "[unused1]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
]  # ids 0, 3, 4, 5, 6 as BERT's are not attnkit's


def _wordpiece() -> Tokenizer:
    """A BERT-style uncased WordPiece with BERT's post-processor, built with `tokenizers` (transformers 5's
    BertTokenizerFast(vocab_file=...) builds an empty one here)."""
    from tokenizers import normalizers, processors

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=SPECIALS, show_progress=False)
    tokenizer.train_from_iterator([text for text, _ in NEWS] * 5 + TEXT, trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tokenizer


def _bert_folder(folder, head: str):
    tokenizer = transformers.BertTokenizerFast(tokenizer_object=_wordpiece())
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=40,
        id2label={0: "finance", 1: "sport"},
        label2id={"finance": 0, "sport": 1},
    )
    model = randomise(getattr(transformers, head)(config))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def test_bert_classifier_imports_and_predicts_as_transformers_does(tmp_path, capsys):
    ref, tokenizer = _bert_folder(tmp_path / "bert", "BertForSequenceClassification")
    run = tmp_path / "run"
    assert main(["import", "hf", str(tmp_path / "bert"), "--out", str(run)]) == 0
    opened = open_run(run)
    assert opened.classes == ["finance", "sport"] and opened.options.pooling == "pooler"
    texts = ["markets rose again", "a goal in the final minute of the cup", "rates"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert batch.input_ids[0, 0] == tokenizer.cls_token_id == 4  # the framing is the tokenizer's own
    with torch.no_grad():
        expected = ref(**batch).logits.softmax(-1)
    torch.testing.assert_close(opened.probabilities(texts), expected, atol=1e-5, rtol=0)
    capsys.readouterr()
    assert main(["predict", str(run), texts[1], "--top-k", "2"]) == 0
    best = ["finance", "sport"][int(expected[1].argmax())]
    assert capsys.readouterr().out.splitlines()[1].strip().startswith(best)


def test_bert_masked_lm_imports_and_fills_masks_as_transformers_does(tmp_path):
    ref, tokenizer = _bert_folder(tmp_path / "bert", "BertForMaskedLM")
    run = tmp_path / "run"
    assert main(["import", "hf", str(tmp_path / "bert"), "--out", str(run)]) == 0
    opened = open_run(run)
    text = "the bank raised [MASK] rates"
    batch = tokenizer([text], return_tensors="pt")
    where = int((batch.input_ids[0] == tokenizer.mask_token_id).nonzero())
    with torch.no_grad():
        probs = ref(**batch).logits[0, where].softmax(-1)
    values, ids = probs.topk(3)
    expected = [(tokenizer.convert_ids_to_tokens(int(i)), float(v)) for v, i in zip(values, ids, strict=True)]
    got = opened.predict([text], top_k=3)[0][0]
    assert [token for token, _ in got] == [token for token, _ in expected]
    assert [p for _, p in got] == pytest.approx([p for _, p in expected], abs=1e-5)


def test_an_imported_bert_fine_tunes_through_the_cli(tmp_path, capsys):
    """Import a tiny BERT, fine-tune it on a toy CSV with a new head, predict: the run keeps BERT's
    tokenizer and architecture and starts from its encoder and pooler."""
    _bert_folder(tmp_path / "bert", "BertForMaskedLM")
    imported = tmp_path / "imported"
    assert main(["import", "hf", str(tmp_path / "bert"), "--out", str(imported)]) == 0
    data = tmp_path / "news.csv"
    data.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in NEWS * 6))
    run = tmp_path / "tuned"
    args = [
        "train",
        "classify",
        "--train",
        str(data),
        "--init",
        str(imported),
        "--pooling",
        "pooler",
        "--out",
        str(run),
    ]
    args += ["--epochs", "2", "--max-len", "24", "--valid-fraction", "0.2", "--no-progress", "--lr", "1e-3"]
    args += ["--layer-decay", "0.8", "--warmup-steps", "2"]
    assert main(args) == 0
    assert (run / "tokenizer.json").read_text() == (imported / "tokenizer.json").read_text()
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["embed_norm"] and model["type_vocab_size"] == 2 and model["eps"] == 1e-12
    capsys.readouterr()
    assert main(["predict", str(run), "the striker scored", "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "finance" in out and "sport" in out


def test_explain_works_on_imported_runs(gpt2_folder, vit_folder, tmp_path, capsys):
    """The capture needs nothing of the import: every layer's maps come out of an imported GPT-2,
    BERT and ViT."""
    from PIL import Image

    _bert_folder(tmp_path / "bert", "BertForSequenceClassification")
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(image)
    cases = [(gpt2_folder[0], ["the quick", "--max-new-tokens", "3"]), (tmp_path / "bert", ["markets rose"])]
    cases.append((vit_folder[0], [str(image)]))
    for i, (folder, inputs) in enumerate(cases):
        run = tmp_path / f"run{i}"
        assert main(["import", "hf", str(folder), "--out", str(run)]) == 0
        out = tmp_path / f"explain{i}"
        assert main(["explain", str(run), *inputs, "--format", "json", "--out", str(out)]) == 0
        explained = json.loads((out / "attention.json").read_text())
        layers = json.loads((run / "config.json").read_text())["model"]["n_layers"]
        assert sorted(m["layer"] for m in explained["maps"]) == list(range(layers))  # one map per layer


def test_a_hub_id_that_cannot_be_downloaded_is_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # tests never use the network
    assert main(["import", "hf", "someone/missing-model", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: someone/missing-model: no such folder, and the hub download failed (")
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------- Marian

GERMAN = ["ein mann fährt fahrrad", "eine frau liest ein buch", "zwei hunde spielen im park"] * 10
ENGLISH = ["a man rides a bike", "a woman reads a book", "two dogs play in the park"] * 10


def _marian_folder(folder):
    """A MarianMTModel with OPUS-MT's settings and the Marian tokenizer's files, built here: two
    SentencePiece models trained on a few sentences and a vocab.json over their pieces."""
    import io

    import sentencepiece

    pieces = {}
    for name, texts in (("source", GERMAN), ("target", ENGLISH)):
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model,
            vocab_size=40,
            model_type="unigram",
            minloglevel=2,
            hard_vocab_limit=False,
        )
        (folder / f"{name}.spm").write_bytes(model.getvalue())
        processor = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
        pieces[name] = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    vocab = ["</s>", "<unk>", *sorted({p for ps in pieces.values() for p in ps} - {"<unk>", "<s>", "</s>"})]
    vocab += [f"▁unused{i}" for i in range(300 - len(vocab))] + ["<pad>"]  # OPUS-MT's pad is the last id
    folder.mkdir(exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    tokenizer = transformers.MarianTokenizer(
        source_spm=str(folder / "source.spm"),
        target_spm=str(folder / "target.spm"),
        vocab=str(folder / "vocab.json"),
        source_lang="de",
        target_lang="en",
    )
    model = tiny_marian(transformers, vocab_size=len(vocab), max_positions=80, forced_eos_token_id=0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return transformers.MarianMTModel.from_pretrained(folder).eval(), tokenizer


def test_marian_imports_as_a_translate_run_that_translates_as_transformers_does(tmp_path, capsys):
    folder = tmp_path / "marian"
    folder.mkdir()
    ref, tokenizer = _marian_folder(folder)
    run = tmp_path / "run"
    assert main(["import", "hf", str(folder), "--out", str(run)]) == 0
    opened = open_run(run)
    assert (opened.model.bos_id, opened.model.eos_id) == (ref.config.decoder_start_token_id, 0)
    assert (opened.options.length_penalty, opened.options.alpha) == ("length", 1.0)  # transformers' form
    sentences = ["ein mann liest ein buch", "zwei frauen spielen"]
    batch = tokenizer(sentences, text_target=ENGLISH[:2], padding=True, return_tensors="pt")
    ours = opened.encode(sentences, ENGLISH[:2])
    assert ours["src"].tolist() == batch.input_ids.tolist()  # the same pieces, ids and eos
    with torch.no_grad():
        inputs = tokenizer(sentences, padding=True, return_tensors="pt")
        expected = ref.generate(**inputs, num_beams=1, max_new_tokens=20, forced_eos_token_id=None)[:, 1:]
    from attnkit.tasks.translate.decoding import translate_ids

    sources = [row[row != ref.config.pad_token_id].tolist() for row in inputs.input_ids]
    ids = translate_ids(opened.model, sources, search="greedy")
    assert len({t for row in expected.tolist() for t in row}) > 2  # a model that does not repeat one token
    for mine, theirs in zip(ids, expected.tolist(), strict=True):
        theirs = theirs[: theirs.index(0)] if 0 in theirs else theirs
        assert mine[: len(theirs)] == theirs  # token for token, as far as transformers went
        assert opened.tokenizer.decode(theirs) == tokenizer.decode(theirs, skip_special_tokens=True)
    capsys.readouterr()
    assert main(["predict", str(run), sentences[0], "--beam", "1"]) == 0
    assert capsys.readouterr().out == opened.translate(sentences[:1], search="greedy")[0] + "\n"


def test_an_imported_marian_fine_tunes_through_the_cli(tmp_path, capsys):
    """`train translate --init` on an imported Marian: its SentencePiece tokenizer, its ids (decoder
    start = pad, eos 0, pad the last id), the training loss equal to transformers' on the same pairs,
    and it learns the new pairs."""
    from attnkit.tasks.adapters import HiddenForward
    from attnkit.tasks.translate.data import encode_pairs
    from attnkit.tasks.translate.objective import TranslateTask
    from attnkit.tasks.translate.train import run_tokenizer

    folder = tmp_path / "marian"
    folder.mkdir()
    ref, tokenizer = _marian_folder(folder)
    imported = tmp_path / "run"
    assert main(["import", "hf", str(folder), "--out", str(imported)]) == 0
    german = ["zwei frauen lesen im park", "ein hund fährt fahrrad"] * 8
    english = ["two women read in the park", "a dog rides a bike"] * 8
    for name, lines in (("train.de", german), ("train.en", english)):
        (tmp_path / name).write_text("\n".join(lines) + "\n")

    def loss(run_dir):
        """Mean cross-entropy of the training pairs, as attnkit trains (no label smoothing)."""
        opened = open_run(run_dir)
        words, specials = run_tokenizer(run_dir, opened.config)
        pairs = type("Pairs", (), {"src": german[:2], "tgt": english[:2]})()
        batch = encode_pairs(words, pairs, 64, specials=specials).batches(4096, shuffle=False, seed=0).collate([0, 1])
        with torch.no_grad():
            value, _ = TranslateTask(0.0, specials.pad).loss(HiddenForward(opened.model), batch)
        return float(value), batch

    mine, batch = loss(imported)
    labels = tokenizer(german[:2], text_target=english[:2], padding=True, return_tensors="pt")
    labels["labels"][labels["labels"] == ref.config.pad_token_id] = -100
    assert batch["src"].tolist() == labels["input_ids"].tolist()
    with torch.no_grad():
        theirs = float(ref(**labels).loss)
    assert mine == pytest.approx(theirs, abs=1e-5)

    args = ["train", "translate", "--train-src", str(tmp_path / "train.de"), "--train-tgt", str(tmp_path / "train.en")]
    args += ["--init", str(imported), "--out", str(tmp_path / "tuned"), "--valid-size", "2", "--average-last", "1"]
    assert main([*args, "--max-steps", "40", "--lr", "3e-3", "--warmup-steps", "0", "--label-smoothing", "0"]) == 0
    capsys.readouterr()
    config, before = (json.loads((d / "config.json").read_text()) for d in (tmp_path / "tuned", imported))
    assert config["specials"] == before["specials"] and config["model"] == before["model"]
    assert all((tmp_path / "tuned" / name).is_file() for name in ("source.spm", "target.spm", "vocab.json"))
    assert loss(tmp_path / "tuned")[0] < 0.7 * mine
    assert main(["predict", str(tmp_path / "tuned"), "zwei frauen lesen im park", "ein hund"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # one translation per sentence
