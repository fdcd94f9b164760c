"""`lightbrain serve`: the OpenAI-compatible API over a real HTTP server, driven by the official client."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from lightbrain import DISCLAIMER  # noqa: E402
from lightbrain.config import LightBrainConfig, ModelConfig  # noqa: E402
from lightbrain.data.tokenizers import train_medical_bpe  # noqa: E402
from lightbrain.inference.generate import generate_stream, generate_text  # noqa: E402
from lightbrain.inference.serve import DISCLAIMER_HEADER, ServeLimits, create_app, running_server  # noqa: E402
from lightbrain.models.lightbrain_tiny import LightBrainTiny  # noqa: E402
from lightbrain.training.checkpoint import load_model, save_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = "tiny-test"
SENTENCES = [
    "The patient presented with fever, cough and shortness of breath for three days.",
    "Blood pressure was 150/95 mmHg and the heart rate was 88 beats per minute.",
    "Metformin is a first-line treatment for type 2 diabetes mellitus.",
    "Chest radiography showed bilateral infiltrates consistent with pneumonia.",
    "The doctor recommended rest, fluids and follow-up in one week.",
    "Asthma symptoms include wheezing, chest tightness and a chronic cough.",
]
LIMITS = ServeLimits(max_prompt_tokens=64, max_tokens=48, max_body_bytes=4096, max_choices=4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random LightBrainTiny and a medical BPE trained here, saved and loaded back as a checkpoint."""
    torch.manual_seed(0)
    tokenizer = train_medical_bpe(SENTENCES * 3, vocab_size=300)
    config = LightBrainConfig(model=ModelConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2,
                                                n_embd=32, dropout=0.0))
    path = save_checkpoint(tmp_path_factory.mktemp("serve") / "tiny.pt", model=LightBrainTiny(config.model),
                           config=config, tokenizer=tokenizer.to_dict())
    model, tokenizer, _ = load_model(path)
    return SimpleNamespace(model=model, tokenizer=tokenizer, path=path)


@pytest.fixture(scope="module")
def server(tiny):
    with running_server(create_app(tiny.model, tiny.tokenizer, model_name=MODEL, limits=LIMITS)) as url:
        yield url


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0, timeout=30)


def expected(tiny, prompt: str, max_tokens: int, **sampling) -> tuple[str, str, int]:
    """(text, finish_reason, completion_tokens) straight from the generation loop, no server."""
    text = generate_text(tiny.model, tiny.tokenizer, prompt, max_tokens, **sampling)
    ids = tiny.tokenizer.encode(prompt) or [tiny.tokenizer.eot_id]
    tokens = [int(t[0]) for t in generate_stream(tiny.model, torch.tensor([ids]), max_tokens, **sampling)]
    eot = tiny.tokenizer.eot_id
    if eot in tokens:
        return text, "stop", tokens.index(eot)
    return text, "length", max_tokens


def sse_events(response) -> list[str]:
    """The data fields of a server-sent-event stream, checking its framing on the way."""
    raw = response.read().decode("utf-8")
    assert raw.endswith("data: [DONE]\n\n")
    blocks = raw.split("\n\n")
    assert blocks[-1] == ""
    assert all(b.startswith("data: ") for b in blocks[:-1])
    return [b[len("data: "):] for b in blocks[:-1]]


def test_health_and_models(server, client):
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL and health["disclaimer"] == DISCLAIMER
    assert health["active"] == 0
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "lightbrain"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.models.retrieve("gpt-4")


@pytest.mark.parametrize("prompt", ["The patient presented with", "Metformin is"])
def test_greedy_completion_equals_generate_text(tiny, client, prompt):
    raw = client.completions.with_raw_response.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0)
    assert raw.headers[DISCLAIMER_HEADER] == DISCLAIMER
    result = raw.parse()
    text, finish, n_tokens = expected(tiny, prompt, 24, temperature=0, top_k=None)
    assert result.object == "text_completion" and result.model == MODEL and result.id.startswith("cmpl-")
    [choice] = result.choices
    assert (choice.text, choice.index, choice.logprobs, choice.finish_reason) == (text, 0, None, finish)
    prompt_tokens = len(tiny.tokenizer.encode(prompt))
    assert result.usage.prompt_tokens == prompt_tokens
    assert result.usage.completion_tokens == n_tokens
    assert result.usage.total_tokens == prompt_tokens + n_tokens
    assert json.loads(raw.http_response.text)["disclaimer"] == DISCLAIMER


def test_streaming_gives_the_same_text_in_openai_chunks(tiny, server, client):
    prompt = "Chest radiography showed"
    text, finish, n_tokens = expected(tiny, prompt, 30, temperature=0, top_k=None)
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=30, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert len(chunks) > 2  # text arrived piece by piece
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == finish
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == n_tokens

    # the raw wire format: `data: {json}\n\n` events ending with `data: [DONE]\n\n`
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 30, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server}/v1/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers[DISCLAIMER_HEADER] == DISCLAIMER
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    assert all(p["object"] == "text_completion" and p["model"] == MODEL for p in payloads)
    assert len({p["id"] for p in payloads}) == 1
    assert "".join(p["choices"][0]["text"] for p in payloads) == text


def test_seeded_sampling_and_n_choices(tiny, client):
    prompt = "Asthma symptoms include"
    result = client.completions.create(model=MODEL, prompt=prompt, max_tokens=20, temperature=1.0, seed=11, n=3,
                                       extra_body={"top_k": 20})
    assert [c.index for c in result.choices] == [0, 1, 2]
    for j, choice in enumerate(result.choices):  # sample j uses seed + j
        assert choice.text == expected(tiny, prompt, 20, temperature=1.0, top_k=20, seed=11 + j)[0]
    assert len({c.text for c in result.choices}) > 1
    again = client.completions.create(model=MODEL, prompt=prompt, max_tokens=20, temperature=1.0, seed=11,
                                      extra_body={"top_k": 20})
    assert again.choices[0].text == result.choices[0].text
    # a list of prompts: choices are ordered prompt by prompt
    both = client.completions.create(model=MODEL, prompt=["Metformin is", "The doctor"], max_tokens=8, temperature=0)
    assert [c.text for c in both.choices] == [expected(tiny, p, 8, temperature=0)[0] for p in ("Metformin is", "The doctor")]


def test_stop_sequences_cut_the_text(tiny, client):
    prompt = "Blood pressure was"
    full = expected(tiny, prompt, 40, temperature=0)[0]
    assert len(full) > 12, "the greedy text is too short to pick a stop sequence from"
    stop = full[6:9]
    cut = full[: full.index(stop)]
    result = client.completions.create(model=MODEL, prompt=prompt, max_tokens=40, temperature=0, stop=[stop, "\x00"])
    assert result.choices[0].text == cut and result.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=MODEL, prompt=prompt, max_tokens=40, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut
    echoed = client.completions.create(model=MODEL, prompt=prompt, max_tokens=40, temperature=0, stop=stop, echo=True)
    assert echoed.choices[0].text == prompt + cut


def test_empty_or_missing_prompt_starts_a_new_document(tiny, server, client):
    text = expected(tiny, "", 12, temperature=0)[0]
    result = client.completions.create(model=MODEL, prompt="", max_tokens=12, temperature=0)
    assert result.choices[0].text == text
    assert result.usage.prompt_tokens == 1  # the end-of-text token the model reads instead
    response = httpx.post(f"{server}/v1/completions", json={"max_tokens": 12, "temperature": 0})
    assert response.status_code == 200 and response.json()["choices"][0]["text"] == text


@pytest.mark.parametrize("body, status, param, words", [
    ({"prompt": "The patient", "max_tokens": 49}, 400, "max_tokens", "at most 48"),
    ({"prompt": "fever " * 80}, 400, "prompt", "at most 64"),
    ({"prompt": "x", "temperature": -1}, 400, "temperature", "between 0 and 2"),
    ({"prompt": "x", "temperature": "hot"}, 400, "temperature", "must be a number"),
    ({"prompt": "x", "max_tokens": 2.5}, 400, "max_tokens", "must be an integer"),
    ({"prompt": "x", "top_p": 0}, 400, "top_p", "greater than 0"),
    ({"prompt": "x", "n": 5}, 400, "n", "between 1 and 4"),
    ({"prompt": ["a", "b", "c"], "n": 2}, 400, "n", "at most 4 completions"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "at most 4"),
    ({"prompt": [1, 2, 3]}, 400, "prompt", "token ids"),
    ({"prompt": "x", "logprobs": 2}, 400, "logprobs", "not supported"),
    ({"prompt": "x", "frobnicate": True}, 400, "frobnicate", "unknown parameter"),
    ({"prompt": "x", "model": "gpt-4"}, 404, "model", "does not exist"),
    ({"prompt": "x", "stream": "yes"}, 400, "stream", "true or false"),
    (["not", "an", "object"], 400, None, "JSON object"),
])
def test_bad_requests_get_clear_openai_errors(server, body, status, param, words):
    response = httpx.post(f"{server}/v1/completions", json={"model": MODEL, **body} if isinstance(body, dict) else body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and words in error["message"]


def test_malformed_and_oversized_bodies(server, client):
    response = httpx.post(f"{server}/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    big = json.dumps({"model": MODEL, "prompt": "a" * 5000}).encode()
    response = httpx.post(f"{server}/v1/completions", content=big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"

    def chunked():  # no Content-Length: the limit still holds while reading
        yield big

    response = httpx.post(f"{server}/v1/completions", content=chunked())
    assert response.status_code == 413
    response = httpx.get(f"{server}/no/such/route")
    assert response.status_code == 404 and "/no/such/route" in response.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model=MODEL, prompt="x", max_tokens=1000)


def test_concurrent_requests_get_their_own_results(tiny, client):
    jobs = [(p, s) for p in ("The patient presented with", "Metformin is", "Chest", "") for s in (None, 3)]
    want = {(p, s): expected(tiny, p, 32, temperature=0 if s is None else 1.0, top_k=None, seed=s)[0] for p, s in jobs}
    got, errors = {}, []

    def call(prompt, seed):
        try:
            kwargs = {"temperature": 0} if seed is None else {"temperature": 1.0, "seed": seed}
            stream = client.completions.create(model=MODEL, prompt=prompt, max_tokens=32, stream=True, **kwargs)
            got[(prompt, seed)] = "".join(c.choices[0].text for c in stream)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and got == want


class EndlessSlowModel(torch.nn.Module):
    """Wraps a model so it never emits end-of-text and each step takes a little while: a long stream."""

    def __init__(self, model, eot_id: int, delay: float = 0.002):
        super().__init__()
        self.inner, self.eot_id, self.config, self.delay = model, eot_id, model.config, delay

    def new_kv_cache(self, batch):
        return self.inner.new_kv_cache(batch)

    def forward(self, idx, **kwargs):
        time.sleep(self.delay)
        logits, loss = self.inner(idx, **kwargs)
        logits[..., self.eot_id] = float("-inf")
        return logits, loss


def wait_for(condition, what: str, seconds: float = 20.0):
    """Poll `condition` until it returns something true, and return that."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_disconnect_frees_the_slot_and_a_full_queue_answers_503(tiny):
    model = EndlessSlowModel(copy.deepcopy(tiny.model), tiny.tokenizer.eot_id)
    limits = ServeLimits(max_tokens=100_000, max_active=1, max_queued=1)
    app = create_app(model, tiny.tokenizer, model_name=MODEL, limits=limits)
    endless = {"prompt": "The patient", "max_tokens": 100_000, "stream": True}
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        def stats():
            return http.get("/health").json()

        # a streaming client reads a little, then hangs up
        with http.stream("POST", "/v1/completions", json=endless) as response:
            lines = response.iter_lines()  # kept: dropping the iterator would close the connection already
            assert next(lines).startswith("data: ")
            wait_for(lambda: stats()["active"] == 1, "the stream to be generating")
            # the only slot is busy: one more waits, the next gets 503
            with httpx.stream("POST", f"{url}/v1/completions", json=endless, timeout=30) as queued:
                wait_for(lambda: stats()["queued"] == 1, "the second request to queue")
                busy = http.post("/v1/completions", json=endless)
                assert busy.status_code == 503 and busy.json()["error"]["code"] == "server_busy"
                assert queued.status_code == 200
        wait_for(lambda: stats()["active"] == 0 and stats()["cancelled"] == 2, "both streams to be cancelled")

        # a non-streaming client that gives up is noticed too
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/completions", json={**endless, "stream": False}, timeout=0.5)
        wait_for(lambda: stats()["active"] == 0 and stats()["cancelled"] == 3, "the waiting request to be cancelled")

        # the freed slot serves the next request
        done = http.post("/v1/completions", json={"prompt": "Metformin", "max_tokens": 5, "temperature": 0})
        assert done.status_code == 200 and done.json()["choices"][0]["finish_reason"] == "length"
        assert stats()["served"] == 1


def test_short_load_run_has_no_failures(server):
    spec = importlib.util.spec_from_file_location("load_test", REPO / "bench" / "load_test.py")
    load_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load_test)
    report = load_test.run_load(int(server.rsplit(":", 1)[1]), clients=4, duration=2.0, max_tokens=16,
                                max_requests=200, model=MODEL)
    assert report["failures"] == 0, report["errors"]
    assert report["requests"] > 0 and report["latency_s"]["p50"] is not None
    assert load_test.percentiles([3.0, 1.0, 2.0, 4.0]) == {"p50": 2.0, "p90": 4.0, "p99": 4.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_help_and_serving_a_checkpoint(tiny):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    helped = subprocess.run([sys.executable, "-m", "lightbrain", "serve", "--help"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert helped.returncode == 0 and "--checkpoint" in helped.stdout and "--max-tokens" in helped.stdout

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lightbrain", "serve", "--checkpoint", str(tiny.path),
                             "--port", str(port), "--threads", "1", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        def healthy():
            assert proc.poll() is None, f"the server exited early:\n{proc.stdout.read()}"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, "`lightbrain serve` to answer /health", seconds=60)
        result = httpx.post(f"http://127.0.0.1:{port}/v1/completions",
                            json={"model": "lightbrain-tiny", "prompt": "The patient", "max_tokens": 6, "temperature": 0})
        assert result.status_code == 200
        assert result.json()["choices"][0]["text"] == expected(tiny, "The patient", 6, temperature=0)[0]
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert DISCLAIMER in output
