"""Property-based tests (hypothesis): whatever bytes a data file holds, whatever values a preset or
config.json gives, the only outcomes are a parsed result or the project's own UserError: never a
traceback from deep inside."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnkit.data.interactions import read_interactions
from attnkit.data.parallel import read_parallel
from attnkit.data.readers import read_labeled
from attnkit.engine import TrainConfig
from attnkit.errors import UserError
from attnkit.options import build
from attnkit.runs import open_run
from attnkit.tasks.registry import all_tasks

SETTINGS = settings(
    max_examples=int(os.environ.get("ATTNKIT_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
RUNS = Path(__file__).resolve().parent / "fixtures" / "runs"

# Text that looks like a data file: printable characters, separators, quotes, newlines, odd bytes.
LINES = st.lists(st.text(alphabet=string.printable + "é²\x00\t,;\"'|", max_size=40), min_size=0, max_size=12).map(
    "\n".join
)


def _parsed_or_user_error(call) -> None:
    with contextlib.suppress(UserError):
        call()


@SETTINGS
@given(
    content=st.one_of(LINES, st.binary(max_size=200).map(lambda b: b.decode("latin-1"))),
    suffix=st.sampled_from([".csv", ".tsv", ".txt", ".jsonl"]),
)
def test_labelled_files_parse_or_refuse(tmp_path, content, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_bytes(content.encode("utf-8", "surrogatepass"))
    _parsed_or_user_error(lambda: read_labeled(path))


@SETTINGS
@given(
    content=st.one_of(
        LINES,
        st.lists(st.tuples(st.integers(-3, 30), st.integers(-3, 30)), max_size=30).map(
            lambda rows: "\n".join(f"{u} {i}" for u, i in rows)
        ),
    )
)
def test_interaction_files_parse_or_refuse(tmp_path, content):
    path = tmp_path / "interactions.txt"
    path.write_text(content, encoding="utf-8", errors="surrogatepass")
    _parsed_or_user_error(lambda: read_interactions(str(path)))


@SETTINGS
@given(source=LINES, target=LINES)
def test_parallel_files_parse_or_refuse(tmp_path, source, target):
    (tmp_path / "a.de").write_text(source)
    (tmp_path / "a.en").write_text(target)
    _parsed_or_user_error(lambda: read_parallel(str(tmp_path / "a.de"), str(tmp_path / "a.en")))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@SETTINGS
@given(task=st.sampled_from(sorted(all_tasks())), data=st.data())
def test_any_preset_values_build_options_or_refuse(task, data):
    spec = all_tasks()[task]
    names = sorted({f for f in spec.options.__dataclass_fields__} | set(TrainConfig.__dataclass_fields__))
    preset = data.draw(st.dictionaries(st.sampled_from(names), JSON_VALUES, max_size=4))
    _parsed_or_user_error(lambda: build(spec.options, preset))
    _parsed_or_user_error(lambda: build(TrainConfig, spec.train_defaults, preset))


@pytest.fixture(scope="module")
def run_copies(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {task: shutil.copytree(RUNS / task, root / task) for task in ("classify", "recommend", "vision")}


def test_a_pad_id_outside_the_vocabulary_is_refused(run_copies):
    """A case the property below found: an Embedding asserted instead of the run being refused."""
    source = run_copies["classify"]
    config = json.loads((RUNS / "classify" / "config.json").read_text())
    config["model"]["pad_id"] = config["model"]["vocab_size"]
    (source / "config.json").write_text(json.dumps(config))
    try:
        with pytest.raises(UserError, match=r"pad_id=\d+ is outside the vocabulary"):
            open_run(source)
    finally:
        shutil.copy(RUNS / "classify" / "config.json", source / "config.json")


@SETTINGS
@given(task=st.sampled_from(["classify", "recommend", "vision"]), data=st.data())
def test_any_config_json_opens_or_refuses(run_copies, task, data, tmp_path_factory):
    """config.json with some fields replaced by arbitrary JSON: the run opens or a UserError says why."""
    source = run_copies[task]
    config = json.loads((RUNS / task / "config.json").read_text())
    where = data.draw(st.sampled_from(["top", "options", "model"]))
    target = config if where == "top" else config[where]
    key = data.draw(st.sampled_from(sorted(target)) | st.text(max_size=6))
    target[key] = data.draw(JSON_VALUES)
    (source / "config.json").write_text(json.dumps(config))
    try:
        _parsed_or_user_error(lambda: open_run(source))
    finally:
        shutil.copy(RUNS / task / "config.json", source / "config.json")
