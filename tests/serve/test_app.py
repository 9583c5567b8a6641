"""`attnkit serve`: answers equal to the run's own records, bad requests as 4xx JSON errors, the API key,
and micro-batching that never hands one request another's answer (in-process, through FastAPI's
test client: nothing listens on a port)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from attnkit.runs import open_run

pytest.importorskip("fastapi", reason="serving needs fastapi (extra: serve)")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")

from fastapi.testclient import TestClient

from attnkit.serve.app import build_app

TEXTS = ["oil prices rose", "the striker scored twice", "shares fell", "", "rates were held again today"]


@pytest.fixture
def classifier(copy_run):
    return open_run(copy_run("classify"))


def test_predict_answers_what_the_run_records(classifier):
    with TestClient(build_app(classifier)) as client:
        response = client.post("/v1/predict", json={"inputs": TEXTS, "top_k": 2})
        assert response.status_code == 200
        assert response.json() == {"predictions": json.loads(json.dumps(classifier.records(TEXTS, top_k=2)))}
        assert "warning" in response.json()["predictions"][3]  # the empty text says so
        assert client.get("/health").json() == {"status": "ok"}
        info = client.get("/v1/info").json()
        assert (
            info["task"] == "classify" and info["classes"] == classifier.classes and info["options"] == {"top_k": "int"}
        )


def test_translation_and_language_model_runs_serve_too(copy_run):
    translator = open_run(copy_run("translate"))
    with TestClient(build_app(translator)) as client:
        answer = client.post("/v1/predict", json={"inputs": ["ein hund", "zwei katzen"], "beam": 1}).json()
    assert answer["predictions"] == translator.records(["ein hund", "zwei katzen"], beam=1)
    lm = open_run(copy_run("lm"))
    with TestClient(build_app(lm)) as client:
        answer = client.post("/v1/predict", json={"inputs": ["to be"], "max_new_tokens": 5}).json()
    assert answer["predictions"] == lm.records(["to be"], max_new_tokens=5)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "the body is not JSON"),
        (b"[1, 2]", 422, "the body must be a JSON object"),
        (b'{"texts": ["a"]}', 422, "missing field 'inputs'"),
        (b'{"inputs": "a"}', 422, "'inputs' must be a list of strings"),
        (b'{"inputs": [1, 2]}', 422, "'inputs' must be a list of strings"),
        (b'{"inputs": []}', 422, "'inputs' is empty"),
        (b'{"inputs": ["a"], "top_k": "3"}', 422, "'top_k' must be a whole number, got '3'"),
        (b'{"inputs": ["a"], "top_k": 0}', 422, "top_k must be at least 1"),
        (b'{"inputs": ["a"], "beam": 4}', 422, "unknown field 'beam' (options: top_k)"),
        (json.dumps({"inputs": ["x" * 100] * 2000}).encode(), 413, "2000 inputs in one request; at most 1024"),
    ],
)
def test_a_bad_request_is_a_json_error_and_the_server_goes_on(classifier, body, status, message):
    with TestClient(build_app(classifier)) as client:
        response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == status
        assert response.json()["error"].startswith(message)
        assert client.post("/v1/predict", json={"inputs": ["still here"]}).status_code == 200


def test_a_failure_inside_the_model_is_a_500_and_the_server_goes_on(classifier, monkeypatch):
    records = classifier.records

    def failing(inputs, **options):
        if "boom" in inputs:
            raise RuntimeError("the model failed")
        return records(inputs, **options)

    monkeypatch.setattr(classifier, "records", failing)
    with TestClient(build_app(classifier, max_batch=1)) as client:
        response = client.post("/v1/predict", json={"inputs": ["boom"]})
        assert response.status_code == 500 and response.json()["error"].startswith("internal error")
        assert client.post("/v1/predict", json={"inputs": ["still here"]}).json()["predictions"] == records(
            ["still here"]
        )


def test_a_body_over_the_limit_is_refused(classifier):
    with TestClient(build_app(classifier, max_body_bytes=1000)) as client:
        response = client.post("/v1/predict", json={"inputs": ["x" * 2000]})
    assert response.status_code == 413 and "larger than 1,000 bytes" in response.json()["error"]


def test_the_api_key_guards_v1_but_not_health(classifier):
    with TestClient(build_app(classifier, api_key="s3cret")) as client:
        assert client.post("/v1/predict", json={"inputs": ["a"]}).status_code == 401
        assert client.post("/v1/predict", json={"inputs": ["a"]}, headers={"X-API-Key": "wrong"}).status_code == 401
        ok = client.post("/v1/predict", json={"inputs": ["a"]}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert client.get("/v1/info", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/health").status_code == 200


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(classifier):
    """Many different requests at once, with different options: every answer is the record of that
    request's own inputs, and fewer model calls than requests were made."""
    texts = [f"{word} {i}" for i, word in enumerate(("oil", "goal", "shares", "rates", "wheat") * 8)]
    expected = {top_k: classifier.records(texts, top_k=top_k) for top_k in (1, 2)}
    answers: dict[int, object] = {}
    with TestClient(build_app(classifier, max_batch=16, max_wait_ms=50)) as client:

        def ask(i: int) -> None:
            top_k = 1 + i % 2
            response = client.post("/v1/predict", json={"inputs": texts[i : i + 2], "top_k": top_k})
            answers[i] = (response.status_code, response.json(), top_k)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(0, len(texts) - 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batches = client.get("/v1/info").json()["batches"]
    assert len(answers) == len(threads)
    for i, (status, body, top_k) in answers.items():
        assert status == 200
        assert body["predictions"] == json.loads(json.dumps(expected[top_k][i : i + 2]))
    assert batches < len(threads)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_attnkit_serve_listens_on_loopback_and_answers(backend, copy_run):
    """The command itself: uvicorn on a free loopback port, a request over real HTTP, then stopped;
    with --backend onnx after exporting the run at start."""
    if backend == "onnx":
        pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime (extra: onnx)")
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    run = copy_run("classify")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "attnkit.cli", "serve", str(run), "--port", str(port), "--backend", backend]
    # The key on the command line, or (kept out of `ps`) in the environment.
    env = {**os.environ, "ATTNKIT_API_KEY": "k"} if backend == "onnx" else os.environ
    command += ["--api-key", "k"] if backend == "torch" else []
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"inputs": ["x"]}).status_code == 401
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/predict", json={"inputs": ["oil prices rose"]}, headers={"X-API-Key": "k"}
        )
        assert answer.status_code == 200
        (got,), (want,) = answer.json()["predictions"], open_run(run).records(["oil prices rose"])
        assert got["label"] == want["label"] and got["probability"] == pytest.approx(want["probability"], abs=1e-5)
        info = httpx.get(f"http://127.0.0.1:{port}/v1/info", headers={"X-API-Key": "k"}).json()
        assert info["backend"] == backend
        from safetensors.torch import load_file

        assert info["parameters"] == sum(t.numel() for t in load_file(run / "model.safetensors").values())
        server.terminate()  # SIGTERM: a graceful stop, the model's thread included
        output = server.communicate(timeout=20)[0].decode()
        assert server.returncode == 0, output
        assert "Finished server process" in output
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_vision_and_recommend_runs_serve_images_and_histories(copy_run):
    """Images travel as base64 of their files; histories as comma-separated original item ids."""
    import base64

    vision = open_run(copy_run("vision"))
    image = "tests/fixtures/runs/data/vision/test/vertical/0.png"
    encoded = base64.b64encode(Path(image).read_bytes()).decode()
    with TestClient(build_app(vision)) as client:
        answer = client.post("/v1/predict", json={"inputs": [encoded], "top_k": 2})
        assert answer.status_code == 200
        (record,) = answer.json()["predictions"]
        label, probability = vision.predict([image], 2)[0][0]
        assert record["label"] == label and record["probability"] == pytest.approx(probability)
        bad = client.post("/v1/predict", json={"inputs": ["not base64!"]})
        assert bad.status_code == 422 and "is not base64" in bad.json()["error"]
    recommender = open_run(copy_run("recommend"))
    history = ",".join(recommender.data.items[1:4])
    with TestClient(build_app(recommender)) as client:
        answer = client.post("/v1/predict", json={"inputs": [history], "top_k": 3}).json()
    expected = recommender.predict([history.split(",")], 3)[0]
    got = answer["predictions"][0]["items"]
    assert [r["item"] for r in got] == [item for item, _ in expected]
    assert [r["score"] for r in got] == pytest.approx([score for _, score in expected])


def test_attnkit_serve_on_a_port_in_use_is_one_clear_error(copy_run, capsys):
    """uvicorn, binding the port itself, logged the failure from its thread and the command ended with
    status 0; the port is now bound first, before the run is opened."""
    import socket

    from attnkit.cli import main

    run = str(copy_run("classify"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", run, "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in capsys.readouterr().err
    assert main(["serve", run, "--host", "no-such-host.invalid"]) == 2
    assert "--host no-such-host.invalid: not an address to listen on" in capsys.readouterr().err
