"""An OpenAI-compatible HTTP server for a LightBrain checkpoint (research use only).

Routes: POST /v1/completions (OpenAI's legacy completions API, streaming with server-sent events),
GET /v1/models, GET /health and a small web page at /.

How requests meet the model: one worker thread owns the model and every request's generation runs
there, so the event loop never blocks on torch and no two threads touch the model at once. Up to
`limits.max_active` requests are generated together, interleaved one text piece at a time (so a
long request does not hold back a short one); more wait in a bounded queue, and past that the
server answers 503. Each request has its own KV cache (made inside generate_stream), so requests
share no state. Requests are not batched into one forward pass: the model's cache keeps a single
position for the whole batch, so prompts of different lengths cannot share it.

Text comes from the one generation loop, lightbrain.inference.generate.stream_text.
"""

# No `from __future__ import annotations` here: FastAPI must see the route's `Request` annotation as a class.
import asyncio
import contextlib
import json
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from lightbrain import DISCLAIMER
from lightbrain.config import ConfigError

DISCLAIMER_HEADER = "X-LightBrain-Disclaimer"


@dataclass
class ServeLimits:
    """What one request may ask for; requests past a limit get a 4xx that names it."""

    max_prompt_tokens: int = 1024  # the model reads only the last block_size of them
    max_tokens: int = 512  # per completion
    max_body_bytes: int = 64 * 1024
    max_choices: int = 4  # n x number of prompts in one request
    max_active: int = 8  # requests generated at once
    max_queued: int = 32  # requests waiting for a slot; beyond that, 503

    def __post_init__(self) -> None:
        for key, value in vars(self).items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"serve limit {key} must be a positive integer, got {value!r}")


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ---------------------------------------------------------------------------------------------
# Request parsing: plain checks with messages that say which parameter was wrong and why.

@dataclass
class CompletionRequest:
    prompts: list[str]
    prompt_tokens: list[int]  # tokens the model reads for each prompt (an empty prompt reads end-of-text)
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    echo: bool = False


# OpenAI parameters this server accepts only at their "off" values.
_UNSUPPORTED_UNLESS_OFF = {"logprobs": (None,), "best_of": (None, 1), "frequency_penalty": (None, 0),
                           "presence_penalty": (None, 0), "logit_bias": (None, {}), "suffix": (None, "")}
_KNOWN = {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "stop", "n", "seed", "stream",
          "stream_options", "echo", "user", *_UNSUPPORTED_UNLESS_OFF}


def _number(body: dict, key: str, default, lo: float, hi: float | None, integer: bool = False):
    value = body.get(key)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise APIError(400, f"{key} must be {kind}, got {json.dumps(value)}", param=key)
    if value < lo or (hi is not None and value > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise APIError(400, f"{key} must be {bounds}, got {value}", param=key)
    return value


def _prompts(body: dict) -> list[str]:
    prompt = body.get("prompt", "")
    if prompt is None:
        prompt = ""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        raise APIError(400, "prompt as token ids is not supported: send the text as a string", param="prompt")
    raise APIError(400, "prompt must be a string or a non-empty list of strings", param="prompt")


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise APIError(400, "stop must be a string or a list of up to 4 strings", param="stop")
    if len(stops) > 4:
        raise APIError(400, f"stop takes at most 4 sequences, got {len(stops)}", param="stop")
    if any(not s for s in stops):
        raise APIError(400, "stop sequences must not be empty strings", param="stop")
    return stops


def parse_completion_request(body: Any, tokenizer, limits: ServeLimits, model_name: str) -> CompletionRequest:
    """Check a /v1/completions body against OpenAI's rules and our limits; raise APIError if it is wrong."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise APIError(400, f"unknown parameter {unknown[0]!r}; supported: {', '.join(sorted(_KNOWN))}",
                       param=unknown[0], code="unknown_parameter")
    for key, off in _UNSUPPORTED_UNLESS_OFF.items():
        if body.get(key) not in off:
            raise APIError(400, f"{key} is not supported by this server; leave it out", param=key)
    model = body.get("model")
    if model is not None and model != model_name:
        raise APIError(404, f"the model {model!r} does not exist; this server serves {model_name!r}",
                       param="model", code="model_not_found")
    for key in ("stream", "echo"):
        if body.get(key) is not None and not isinstance(body[key], bool):
            raise APIError(400, f"{key} must be true or false, got {json.dumps(body[key])}", param=key)
    stream = bool(body.get("stream"))
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise APIError(400, "stream_options must be an object and needs stream: true", param="stream_options")
    include_usage = bool((options or {}).get("include_usage", False))

    prompts = _prompts(body)
    n = _number(body, "n", 1, 1, limits.max_choices, integer=True)
    if n * len(prompts) > limits.max_choices:
        raise APIError(400, f"n x prompts is {n * len(prompts)}; this server makes at most {limits.max_choices} "
                       "completions per request", param="n")
    prompt_tokens = []
    for i, prompt in enumerate(prompts):
        count = len(tokenizer.encode(prompt)) if prompt else 1
        if count > limits.max_prompt_tokens:
            where = "the prompt" if len(prompts) == 1 else f"prompt {i}"
            raise APIError(400, f"{where} is {count} tokens; this server accepts at most {limits.max_prompt_tokens} "
                           "(and the model reads only its last context-length tokens)",
                           param="prompt", code="context_length_exceeded")
        prompt_tokens.append(count)
    max_tokens = _number(body, "max_tokens", 16, 1, None, integer=True)
    if max_tokens > limits.max_tokens:
        raise APIError(400, f"max_tokens is {max_tokens}; this server generates at most {limits.max_tokens} "
                       "tokens per completion", param="max_tokens")
    top_p = _number(body, "top_p", None, 0, 1)
    if top_p == 0:
        raise APIError(400, "top_p must be greater than 0 (use temperature 0 for greedy decoding)", param="top_p")
    return CompletionRequest(
        prompts=prompts, prompt_tokens=prompt_tokens, max_tokens=max_tokens,
        temperature=float(_number(body, "temperature", 1.0, 0, 2)),
        top_p=None if top_p in (None, 1) else float(top_p),
        top_k=_number(body, "top_k", 0, 0, None, integer=True) or None,
        stop=_stop(body), n=n, seed=_number(body, "seed", None, -(2 ** 63), 2 ** 63 - 1, integer=True),
        stream=stream, include_usage=include_usage, echo=bool(body.get("echo")),
    )


# ---------------------------------------------------------------------------------------------
# One completion's text: stream_text cut at the first stop sequence.

def _stop_cut(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _held_back(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that could still grow into a stop sequence."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def completion_pieces(model, tokenizer, prompt: str, req: CompletionRequest, seed: int | None,
                      info: dict) -> Iterator[str]:
    """Yield the text of one completion piece by piece; fill `info` with completion_tokens and
    finish_reason ("stop": end-of-text or a stop sequence; "length": max_tokens reached)."""
    from lightbrain.inference.generate import stream_text  # torch loads here, not on `lightbrain --help`

    info.update(completion_tokens=0, finish_reason="length")

    def count(token: int) -> None:
        if token == tokenizer.eot_id:
            info["finish_reason"] = "stop"
        else:
            info["completion_tokens"] += 1

    if req.echo and prompt:
        yield prompt
    pieces = stream_text(model, tokenizer, prompt, req.max_tokens, req.temperature, req.top_k, req.top_p, seed,
                         stop_at_eot=True, on_token=count)
    held = ""
    try:
        for piece in pieces:
            held += piece
            cut = _stop_cut(held, req.stop) if req.stop else None
            if cut is not None:
                info["finish_reason"] = "stop"
                if cut:
                    yield held[:cut]
                return
            keep = _held_back(held, req.stop) if req.stop else 0
            if len(held) > keep:
                yield held[:len(held) - keep]
                held = held[len(held) - keep:]
        if held:
            yield held
    finally:
        pieces.close()  # stops generating at once when the client has gone or a stop sequence matched


# ---------------------------------------------------------------------------------------------
# The worker thread: owns the model, runs the admitted requests' completions in turn.

class Job:
    """One request's completions; the worker posts events to `events` on the request's event loop:
    ("text", index, piece), ("done", index, info) for each choice, then one of ("end",), ("error", message)
    or ("cancelled",)."""

    def __init__(self, req: CompletionRequest, loop: asyncio.AbstractEventLoop):
        self.req = req
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def post(self, *event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the request's event loop has closed: nobody is listening
            self.cancel()


class ModelWorker:
    def __init__(self, model, tokenizer, limits: ServeLimits):
        self.model, self.tokenizer, self.limits = model, tokenizer, limits
        self._waiting: queue.Queue[Job] = queue.Queue(maxsize=limits.max_queued)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active = 0
        self.served = 0  # requests completed
        self.cancelled = 0  # requests stopped early because their client went away
        self.failed = 0

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="lightbrain-model-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        try:
            self._waiting.put_nowait(job)
        except queue.Full:
            raise APIError(503, f"the server is busy ({self.limits.max_active} requests generating and "
                           f"{self.limits.max_queued} waiting); retry shortly", type="server_error",
                           code="server_busy") from None

    def stats(self) -> dict:
        return {"active": self._active, "queued": self._waiting.qsize(), "served": self.served,
                "cancelled": self.cancelled, "failed": self.failed}

    def _open(self, job: Job) -> list[tuple[int, Iterator[str], dict]]:
        req = job.req
        choices = []
        for index in range(len(req.prompts) * req.n):
            prompt, sample = req.prompts[index // req.n], index % req.n
            seed = None if req.seed is None else req.seed + sample  # n samples of a seeded request differ
            info: dict = {}
            choices.append((index, completion_pieces(self.model, self.tokenizer, prompt, req, seed, info), info))
        return choices

    @staticmethod
    def _close(choices) -> None:
        for _, pieces, _ in choices:
            pieces.close()

    def _step(self, job: Job, choices: list) -> bool:
        """Advance every unfinished choice by one piece; True when the job is over."""
        if job.cancelled.is_set():
            self._close(choices)
            self.cancelled += 1
            job.post("cancelled")
            return True
        try:
            for choice in list(choices):
                index, pieces, info = choice
                piece = next(pieces, None)
                if piece is None:
                    choices.remove(choice)
                    job.post("done", index, dict(info))
                else:
                    job.post("text", index, piece)
        except Exception as exc:  # a bug or resource error in one request must not stop the server
            self._close(choices)
            self.failed += 1
            job.post("error", f"generation failed: {type(exc).__name__}: {exc}")
            return True
        if choices:
            return False
        self.served += 1
        job.post("end")
        return True

    def _run(self) -> None:
        active: list[tuple[Job, list]] = []
        while not self._stop.is_set():
            while len(active) < self.limits.max_active:
                try:  # block only when there is nothing to generate
                    job = self._waiting.get(timeout=0.05) if not active else self._waiting.get_nowait()
                except queue.Empty:
                    break
                if job.cancelled.is_set():
                    self.cancelled += 1
                    job.post("cancelled")
                    continue
                active.append((job, self._open(job)))
            self._active = len(active)
            active = [(job, choices) for job, choices in active if not self._step(job, choices)]
            self._active = len(active)
        for job, choices in active:  # shutting down
            self._close(choices)
            job.post("error", "the server is shutting down")
        while True:
            try:
                self._waiting.get_nowait().post("error", "the server is shutting down")
            except queue.Empty:
                break
        self._active = 0


# ---------------------------------------------------------------------------------------------
# The HTTP app.

def _usage(req: CompletionRequest, infos: list[dict]) -> dict:
    prompt = sum(req.prompt_tokens)
    completion = sum(info.get("completion_tokens", 0) for info in infos)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _choice(index: int, text: str, finish_reason: str | None) -> dict:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}


async def _read_body(request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the request body is {declared} bytes; this server accepts at most {limit}",
                       code="request_too_large")
    data = bytearray()
    async for chunk in request.stream():  # also bounds bodies sent without a Content-Length
        data += chunk
        if len(data) > limit:
            raise APIError(413, f"the request body is over {limit} bytes, the most this server accepts",
                           code="request_too_large")
    try:
        return json.loads(data.decode("utf-8")) if data else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}") from None


def create_app(model, tokenizer, model_name: str = "lightbrain-tiny", limits: ServeLimits | None = None,
               created: int | None = None):
    """The FastAPI app serving `model` with `tokenizer`; the worker thread starts with the app."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    from lightbrain.inference.page import render_page

    limits = limits or ServeLimits()
    created = int(time.time()) if created is None else created
    model.eval()
    worker = ModelWorker(model, tokenizer, limits)
    headers = {DISCLAIMER_HEADER: DISCLAIMER}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker.start()
        try:
            yield
        finally:
            worker.stop()

    app = FastAPI(title="LightBrain", description=DISCLAIMER, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.worker = worker
    app.state.limits = limits
    app.state.model_name = model_name

    def error(exc: APIError) -> JSONResponse:
        extra = {"Retry-After": "1"} if exc.status == 503 else {}
        return JSONResponse(exc.body(), status_code=exc.status, headers={**headers, **extra})

    @app.exception_handler(APIError)
    async def on_api_error(request, exc: APIError):
        return error(exc)

    @app.exception_handler(HTTPException)
    async def on_http_error(request, exc: HTTPException):
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error(APIError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def on_crash(request, exc: Exception):
        return error(APIError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error"))

    model_card = {"id": model_name, "object": "model", "created": created, "owned_by": "lightbrain"}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, **worker.stats(), "disclaimer": DISCLAIMER}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str):
        if name != model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")
        return model_card

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(render_page(model_name, limits.max_tokens), headers=headers)

    class _JobStream(StreamingResponse):
        """Cancels its job however the response ends, so a client that leaves frees its slot at once."""

        def __init__(self, job: Job, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.job = job

        async def __call__(self, scope, receive, send):
            try:
                await super().__call__(scope, receive, send)
            finally:
                self.job.cancel()

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _read_body(request, limits.max_body_bytes)
        req = parse_completion_request(body, tokenizer, limits, model_name)
        job = Job(req, asyncio.get_running_loop())
        worker.submit(job)
        meta = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": model_name}
        if req.stream:
            return _JobStream(job, _sse(job, meta), media_type="text/event-stream",
                              headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return JSONResponse(await _collect(job, meta, request), headers=headers)

    return app


async def _sse(job: Job, meta: dict):
    def chunk(payload: dict) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    infos: list[dict] = []
    while True:
        kind, *rest = await job.events.get()
        if kind == "text":
            yield chunk({**meta, "choices": [_choice(rest[0], rest[1], None)]})
        elif kind == "done":
            infos.append(rest[1])
            yield chunk({**meta, "choices": [_choice(rest[0], "", rest[1]["finish_reason"])]})
        elif kind == "end":
            if job.req.include_usage:
                yield chunk({**meta, "choices": [], "usage": _usage(job.req, infos)})
            yield "data: [DONE]\n\n"
            return
        else:  # error or cancelled: tell the client in OpenAI's error shape, then close
            message = rest[0] if rest else "the request was cancelled"
            yield chunk(APIError(500, message, type="server_error").body())
            return


async def _collect(job: Job, meta: dict, request) -> dict:
    """Wait for a non-streaming job; if the client disconnects meanwhile, cancel it."""
    async def watch():
        while not job.cancelled.is_set():
            await asyncio.sleep(0.25)
            if await request.is_disconnected():
                job.cancel()

    watcher = asyncio.create_task(watch())
    k = len(job.req.prompts) * job.req.n
    texts, infos = [[] for _ in range(k)], [{} for _ in range(k)]
    try:
        while True:
            kind, *rest = await job.events.get()
            if kind == "text":
                texts[rest[0]].append(rest[1])
            elif kind == "done":
                infos[rest[0]] = rest[1]
            elif kind == "end":
                break
            else:
                raise APIError(500 if kind == "error" else 499, rest[0] if rest else "the request was cancelled",
                               type="server_error")
    finally:
        watcher.cancel()
        job.cancel()
    choices = [_choice(i, "".join(texts[i]), infos[i]["finish_reason"]) for i in range(k)]
    return {**meta, "choices": choices, "usage": _usage(job.req, infos), "disclaimer": DISCLAIMER}


# ---------------------------------------------------------------------------------------------
# Running it.

def app_from_checkpoint(path: str | Path, device: str = "cpu", model_name: str | None = None,
                        limits: ServeLimits | None = None, quantize: str | None = None):
    """An app serving the checkpoint at `path`; quantize "bf16" or "int8" serves a smaller-weight copy."""
    from lightbrain.inference.quantize import quantize_if_asked
    from lightbrain.training.checkpoint import load_model

    model, tokenizer, _ = load_model(path, device)
    model = quantize_if_asked(model, quantize)
    return create_app(model, tokenizer, model_name=model_name or "lightbrain-tiny", limits=limits)


@contextlib.contextmanager
def running_server(app, port: int = 0, log_level: str = "warning") -> Iterator[str]:
    """Serve `app` on 127.0.0.1 in a background thread (port 0: any free port); yield its base URL.
    For tests and benchmarks: it only ever listens on the loopback address."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="lightbrain-http", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start (see its log above)")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def serve(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          announce: Callable[[str], None] = print) -> None:
    """Serve until interrupted (Ctrl-C)."""
    import uvicorn

    announce(DISCLAIMER)
    shown = f"[{host}]" if ":" in host else host
    announce(f"serving {app.state.model_name} at http://{shown}:{port}/ (API: http://{shown}:{port}/v1)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        announce("note: the server has no authentication; anyone who can reach this address can use it")
    # on Ctrl-C, open streams get a few seconds to finish before they are cut
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
