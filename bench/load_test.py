"""Bounded load test for `lightbrain serve`, on 127.0.0.1 only.

Concurrent clients send streaming completions for a fixed time (and at most --max-requests in all),
then it prints latency percentiles (whole request and time to first text), requests/s, generated
tokens/s and failures. It stops by itself.

  # start a server in this process from a checkpoint
  python bench/load_test.py --checkpoint runs/tiny/best.pt --clients 16 --duration 20
  # or load a server already running on 127.0.0.1:8000
  python bench/load_test.py --port 8000
  # or a random model of the LightBrain-Tiny-v1.0 shape (GPT-2 tokenizer; needs tiktoken's files)
  python bench/load_test.py --random seed --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

PROMPTS = [
    "The patient presented with",
    "Hypertension is a common condition in which",
    "Common side effects of metformin include",
    "The purpose of this study was to",
    "Question: What are the symptoms of asthma? Answer:",
    "A 54-year-old woman was admitted with",
]


def percentiles(values: list[float]) -> dict[str, float | None]:
    """Nearest-rank p50/p90/p99 (None when there is nothing to measure)."""
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for p in (50, 90, 99):
        out[f"p{p}"] = ordered[min(len(ordered) - 1, max(0, -(-p * len(ordered) // 100) - 1))] if ordered else None
    return out


def _one_request(client, model: str | None, prompt: str, max_tokens: int, temperature: float) -> tuple[float, int]:
    """Send one streaming completion; return (time to first text, completion tokens). Raises on any failure."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature, "top_k": 40, "stream": True,
            "stream_options": {"include_usage": True}}
    if model:
        body["model"] = model
    started = time.perf_counter()
    first = None
    tokens = None
    done = False
    with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                done = True
                break
            message = json.loads(data)
            if "error" in message:
                raise RuntimeError(message["error"]["message"])
            if first is None and any(c.get("text") for c in message["choices"]):
                first = time.perf_counter() - started
            if message.get("usage"):
                tokens = message["usage"]["completion_tokens"]
    if not done or tokens is None:
        raise RuntimeError("the stream ended without usage and [DONE]")
    return (first if first is not None else time.perf_counter() - started), tokens


def run_load(port: int, clients: int = 16, duration: float = 20.0, max_tokens: int = 32, max_requests: int = 5000,
             temperature: float = 0.8, model: str | None = None, timeout: float = 60.0) -> dict:
    """Load the server on 127.0.0.1:`port` with `clients` threads for `duration` seconds."""
    import httpx

    base_url = f"http://127.0.0.1:{int(port)}"  # the host is fixed: this never loads another machine
    lock = threading.Lock()
    latencies: list[float] = []
    first_text: list[float] = []
    errors: list[str] = []
    counts = {"sent": 0, "ok": 0, "failed": 0, "tokens": 0}
    started = time.perf_counter()
    deadline = started + duration

    def client_loop(worker: int) -> None:
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            i = worker
            while time.perf_counter() < deadline:
                with lock:
                    if counts["sent"] >= max_requests:
                        return
                    counts["sent"] += 1
                t0 = time.perf_counter()
                try:
                    ttft, tokens = _one_request(client, model, PROMPTS[i % len(PROMPTS)], max_tokens, temperature)
                except Exception as exc:  # counted, not raised: the report says what failed
                    with lock:
                        counts["failed"] += 1
                        if len(errors) < 5:
                            errors.append(f"{type(exc).__name__}: {exc}")
                else:
                    with lock:
                        counts["ok"] += 1
                        counts["tokens"] += tokens
                        latencies.append(time.perf_counter() - t0)
                        first_text.append(ttft)
                i += clients

    threads = [threading.Thread(target=client_loop, args=(w,), daemon=True) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + timeout + 5)  # a request in flight at the deadline may take up to `timeout`
    elapsed = time.perf_counter() - started
    return {
        "clients": clients, "duration_s": round(elapsed, 2), "requests": counts["ok"], "failures": counts["failed"],
        "requests_per_s": round(counts["ok"] / elapsed, 2), "tokens_per_s": round(counts["tokens"] / elapsed, 1),
        "latency_s": {k: v and round(v, 4) for k, v in percentiles(latencies).items()},
        "first_text_s": {k: v and round(v, 4) for k, v in percentiles(first_text).items()},
        "max_tokens": max_tokens, "errors": errors,
    }


def _random_app(kind: str, max_tokens: int, max_active: int):
    import torch

    from lightbrain.config import ModelConfig
    from lightbrain.data.tokenizers import GPT2Tokenizer, train_medical_bpe
    from lightbrain.inference.serve import ServeLimits, create_app
    from lightbrain.models.lightbrain_tiny import LightBrainTiny

    torch.manual_seed(0)
    if kind == "seed":
        tokenizer = GPT2Tokenizer()
        config = ModelConfig(vocab_size=tokenizer.vocab_size, dropout=0.0)
    else:
        tokenizer = train_medical_bpe(PROMPTS * 4, vocab_size=300)
        config = ModelConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32,
                             dropout=0.0)
    limits = ServeLimits(max_tokens=max(max_tokens, 1), max_active=max_active, max_queued=256)
    return create_app(LightBrainTiny(config), tokenizer, model_name=f"random-{kind}", limits=limits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="serve this checkpoint in-process on a free 127.0.0.1 port")
    source.add_argument("--port", type=int, help="load a server already running on 127.0.0.1:PORT")
    source.add_argument("--random", choices=["tiny", "seed"],
                        help="serve a random model in-process: 'tiny' (2x32) or 'seed' (LightBrain-Tiny-v1.0 shape)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    parser.add_argument("--max-requests", type=int, default=5000, help="stop after this many requests in all")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per completion (default 32)")
    parser.add_argument("--max-active", type=int, default=8, help="in-process server: requests generated at once")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for an in-process server")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.duration > 600:
        parser.error("--clients must be >= 1 and --duration in (0, 600] seconds")

    def load(port: int) -> dict:
        return run_load(port, clients=args.clients, duration=args.duration, max_tokens=args.max_tokens,
                        max_requests=args.max_requests)

    if args.port is not None:
        report = load(args.port)
    else:
        import torch

        from lightbrain.inference.serve import ServeLimits, app_from_checkpoint, running_server

        if args.threads:
            torch.set_num_threads(args.threads)
        if args.checkpoint:
            limits = ServeLimits(max_tokens=max(args.max_tokens, 1), max_active=args.max_active, max_queued=256)
            app = app_from_checkpoint(args.checkpoint, limits=limits)
        else:
            app = _random_app(args.random, args.max_tokens, args.max_active)
        with running_server(app) as url:
            report = load(int(url.rsplit(":", 1)[1]))
    print(json.dumps(report, indent=2))
    if args.json:
        from lightbrain.atomic_io import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
