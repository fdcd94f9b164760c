"""LightBrain against Hugging Face Transformers' GPT2LMHeadModel of the same shape, on this machine.

    python bench/run.py                          # every section; writes bench/RESULTS.md
    python bench/run.py --only decode --repeats 5
    python bench/run.py --only train,batch --write

Both models are built with random weights (no downloads): 6 layers, 6 heads, 384 dims, GPT-2's
vocabulary, a 128-token context (Hugging Face's position table widened to 256 for generation, as it
cannot slide a window). Every number is the median of --repeats timed runs after a warm-up run.

Sections:
  train    forward + backward + AdamW step, batch 8 x 128, tokens/s (fp32; bf16 autocast; optional compile)
  decode   200 new tokens after a 12-token prompt, batch 1, top-k 50, temperature 1.0, seconds
  batch    32 prompts x 200 new tokens, tokens/s
  prepare  `lightbrain prepare` of all of ../shared/data with each tokenizer, documents/s and tokens/s
  quality  bits per byte on held-out text of the fp32, bf16 and int8 inference copies
  gpu      on one GPU, both in bf16: training (batch 32, fused AdamW, compile) tokens/s and MFU; decode
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lightbrain.atomic_io import atomic_write_text
from lightbrain.config import DataConfig, ModelConfig
from lightbrain.inference.generate import generate
from lightbrain.inference.quantize import quantize_for_inference
from lightbrain.models.lightbrain_tiny import LightBrainTiny

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LIGHTBRAIN_SHARED_DATA", REPO.parent / "shared" / "data"))
SECTIONS = ("train", "decode", "batch", "prepare", "quality", "gpu")

VOCAB, BLOCK = 50257, 128
TRAIN_BATCH = 8
PROMPT_LEN, NEW_TOKENS, TOP_K = 12, 200, 50
BATCH_PROMPTS = 32
DECODE_TARGET_S, TRAIN_TARGET_RATIO, PREPARE_TARGET_S = 1.0, 1.5, 60.0


# ---------------------------------------------------------------------------------------------- helpers

def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_stall_us() -> int | None:
    """Microseconds that runnable tasks have waited for a CPU since boot (Linux pressure stall
    information), or None where unavailable. Other work on a shared machine shows up here."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(line.rsplit("total=", 1)[1])


def timed(fns: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each fn() over `repeats` runs, after `warmup` untimed runs. The functions
    take turns within each repeat, so a burst of load elsewhere slows all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def row(section: str, setting: str, lightbrain: float | None, hf: float | None, unit: str,
        higher_is_better: bool = True, target: str = "", note: str = "") -> dict:
    return dict(section=section, setting=setting, lightbrain=lightbrain, hf=hf, unit=unit,
                higher_is_better=higher_is_better, target=target, note=note)


def verdict(met: bool, by: str) -> str:
    return "met" if met else f"**missed** by {by}"


def lightbrain_model(dropout: float = 0.1) -> LightBrainTiny:
    torch.manual_seed(0)
    return LightBrainTiny(ModelConfig(vocab_size=VOCAB, block_size=BLOCK, dropout=dropout))


def hf_model(n_positions: int = BLOCK):
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=n_positions, n_embd=384, n_layer=6, n_head=6)
    model = GPT2LMHeadModel(config)
    model.generation_config.eos_token_id = None  # always produce every asked-for token, as LightBrain does
    model.generation_config.pad_token_id = 0
    return model


def bf16_autocast(device_type: str = "cpu"):
    return torch.autocast(device_type, dtype=torch.bfloat16)


# ---------------------------------------------------------------------------------------------- train

def train_step(model, optimizer, step_loss, batch: int = TRAIN_BATCH, device: str = "cpu"):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB, (batch, BLOCK), generator=g).to(device)
    y = torch.randint(0, VOCAB, (batch, BLOCK), generator=g).to(device)
    model.train()

    def step():
        loss = step_loss(model, x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def lightbrain_loss(autocast: bool, device_type: str = "cpu"):
    def loss(model, x, y):
        with bf16_autocast(device_type) if autocast else contextlib.nullcontext():
            return model(x, y)[1]
    return loss


def hf_loss(autocast: bool, device_type: str = "cpu"):
    def loss(model, x, y):
        with bf16_autocast(device_type) if autocast else contextlib.nullcontext():
            return model(input_ids=x, labels=x).loss  # labels are shifted inside the model
    return loss


def lightbrain_train_step(autocast: bool, compile: bool = False):
    model = lightbrain_model()
    opt = model.configure_optimizer(0.1, 1e-4, (0.9, 0.95), "cpu")
    return train_step(torch.compile(model) if compile else model, opt, lightbrain_loss(autocast))


def hf_train_step(autocast: bool, fused: bool = False):
    model = hf_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95), fused=fused)
    return train_step(model, opt, hf_loss(autocast))


def bench_train(args) -> list[dict]:
    steps = {
        ("lb", "fp32"): lightbrain_train_step(False),
        ("hf", "fp32"): hf_train_step(False),
        ("hf", "fp32 fused AdamW"): hf_train_step(False, fused=True),  # what the optimizer alone is worth
        ("lb", "bf16 autocast"): lightbrain_train_step(True),
        ("hf", "bf16 autocast"): hf_train_step(True),
    }
    if args.compile:
        steps[("lb", "bf16 autocast + compile")] = lightbrain_train_step(True, compile=True)
    results = {key: TRAIN_BATCH * BLOCK / s for key, s in timed(steps, args.repeats, warmup=2).items()}
    for (who, name), tps in results.items():
        log(f"train {who} {name}: {tps:.0f} tokens/s")
    hf_fused = results.pop(("hf", "fp32 fused AdamW"))

    hf32 = results[("hf", "fp32")]
    rows = [
        row("train", f"fp32, batch {TRAIN_BATCH}x{BLOCK} (LightBrain: fused AdamW; HF: default AdamW)",
            results[("lb", "fp32")], hf32, "tokens/s", target="LB/HF >= 1.0: " +
            verdict(results[("lb", "fp32")] >= hf32, f"{1 - results[('lb', 'fp32')] / hf32:.0%}")),
        row("train", "fp32, both with fused AdamW", results[("lb", "fp32")], hf_fused, "tokens/s",
            note="same optimizer kernel: the difference is the model code alone"),
        row("train", "bf16 autocast, both", results[("lb", "bf16 autocast")], results[("hf", "bf16 autocast")],
            "tokens/s"),
    ]
    best_name = max((k[1] for k in results if k[0] == "lb"), key=lambda n: results[("lb", n)])
    best = results[("lb", best_name)]
    rows.append(row("train", f"LightBrain best ({best_name}) vs HF fp32", best, hf32, "tokens/s",
                    target=f"LB/HF >= {TRAIN_TARGET_RATIO}: " +
                    verdict(best / hf32 >= TRAIN_TARGET_RATIO, f"{1 - best / hf32 / TRAIN_TARGET_RATIO:.0%}")))
    if ("lb", "bf16 autocast + compile") in results:
        rows.append(row("train", "LightBrain bf16 autocast + torch.compile", results[("lb", "bf16 autocast + compile")],
                        results[("hf", "bf16 autocast")], "tokens/s", note="HF column: HF bf16 autocast, eager"))
    return rows


# ---------------------------------------------------------------------------------------------- decode

def prompts(batch: int, device: str = "cpu") -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, PROMPT_LEN), generator=torch.Generator().manual_seed(1)).to(device)


def lightbrain_variants() -> dict[str, torch.nn.Module]:
    fp32 = lightbrain_model(dropout=0.0).eval()
    return {"fp32": fp32, "bf16": quantize_for_inference(fp32, "bf16"), "int8": quantize_for_inference(fp32, "int8")}


def lightbrain_generate(model, batch: int, device: str = "cpu"):
    idx = prompts(batch, device)
    seeds = iter(range(10**6))

    def run():
        out = generate(model, idx, NEW_TOKENS, temperature=1.0, top_k=TOP_K, seed=next(seeds))
        assert out.shape == (batch, PROMPT_LEN + NEW_TOKENS)

    return run


def hf_generate(model, batch: int, device: str = "cpu"):
    idx = prompts(batch, device)
    mask = torch.ones_like(idx)

    def run():
        with torch.inference_mode():
            out = model.generate(idx, attention_mask=mask, do_sample=True, top_k=TOP_K, temperature=1.0,
                                 max_new_tokens=NEW_TOKENS, use_cache=True)
        assert out.shape == (batch, PROMPT_LEN + NEW_TOKENS)

    return run


def generation_seconds(batch: int, repeats: int) -> dict[str, float]:
    """Seconds per generate() call: "hf" and each LightBrain variant, timed in turns."""
    runs = {"hf": hf_generate(hf_model(n_positions=256).eval(), batch)}
    runs.update({name: lightbrain_generate(model, batch) for name, model in lightbrain_variants().items()})
    seconds = timed(runs, repeats)
    for name, s in seconds.items():
        log(f"generate batch {batch}, {name}: {s:.3f} s")
    return seconds


def bench_decode(args) -> list[dict]:
    seconds = generation_seconds(1, args.repeats)
    hf_s = seconds.pop("hf")
    rows = []
    for name, s in seconds.items():
        ok = s <= DECODE_TARGET_S
        rows.append(row("decode", f"{NEW_TOKENS} tokens, batch 1, LightBrain {name} (HF fp32)", s, hf_s, "s",
                        higher_is_better=False,
                        target=f"<= {DECODE_TARGET_S} s: " + verdict(ok, f"{s - DECODE_TARGET_S:.2f} s"),
                        note=f"{1000 * s / NEW_TOKENS:.1f} ms/token"))
    return rows


def bench_batch(args) -> list[dict]:
    n = BATCH_PROMPTS * NEW_TOKENS
    seconds = generation_seconds(BATCH_PROMPTS, args.repeats)
    hf_tps = n / seconds.pop("hf")
    return [row("batch", f"{BATCH_PROMPTS} x {NEW_TOKENS} tokens, LightBrain {name} (HF fp32)", n / s, hf_tps,
                "tokens/s") for name, s in seconds.items()]


# ---------------------------------------------------------------------------------------------- data

def seed_tiktoken() -> None:
    """tiktoken's GPT-2 files from ../shared/data/gpt2, so the gpt2 tokenizer works offline."""
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return
    cache = Path(tempfile.mkdtemp(prefix="lightbrain-tiktoken-"))
    subprocess.run(["sh", str(SHARED_DATA / "gpt2" / "seed_tiktoken_cache.sh"), str(cache)], check=True,
                   capture_output=True)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)


def prepare(tokenizer: str, out_dir: Path) -> tuple[float, dict]:
    from lightbrain.data.prepare import prepare_data

    config = DataConfig(sources=[str(SHARED_DATA)], tokenizer=tokenizer, out_dir=str(out_dir), force=True)
    start = time.perf_counter()
    meta = prepare_data(config, progress=False)
    return time.perf_counter() - start, meta


def bench_prepare(args) -> list[dict]:
    if not SHARED_DATA.is_dir():
        return [row("prepare", "all of ../shared/data", None, None, "", note=f"skipped: {SHARED_DATA} is absent")]
    seed_tiktoken()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lightbrain-bench-") as tmp:
        for tokenizer in ("gpt2", "medical-bpe"):
            times = []
            for _ in range(args.prepare_repeats):
                seconds, meta = prepare(tokenizer, Path(tmp) / tokenizer)
                times.append(seconds)
            seconds = statistics.median(times)
            docs = sum(s["documents"] for s in meta["splits"].values())
            tokens = sum(s["tokens"] for s in meta["splits"].values())
            log(f"prepare {tokenizer}: {seconds:.1f} s, {docs} documents, {tokens} tokens")
            rows.append(row("prepare", f"all of ../shared/data, {tokenizer}: {docs:,} documents, {tokens:,} tokens",
                            docs / seconds, None, "documents/s",
                            target=f"< {PREPARE_TARGET_S:.0f} s: " +
                            verdict(seconds < PREPARE_TARGET_S, f"{seconds - PREPARE_TARGET_S:.0f} s"),
                            note=f"{seconds:.1f} s in all, {tokens / seconds:,.0f} tokens/s"))
    return rows


# ---------------------------------------------------------------------------------------------- quality

def quick_trained_model(data_dir: Path, steps: int) -> LightBrainTiny:
    """The seed model after `steps` AdamW steps on the prepared train split: enough for logits with
    real structure, which is what quantization error has to be judged against."""
    from lightbrain.data.loader import random_batch
    from lightbrain.data.token_files import open_split

    train = open_split(data_dir, "train").tokens
    model = lightbrain_model(dropout=0.0)
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.95), "cpu")
    rng = np.random.default_rng(0)
    model.train()
    for step in range(steps):
        x, y = random_batch(train, BLOCK, TRAIN_BATCH, rng)
        with bf16_autocast():
            _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 25 == 0 or step == steps - 1:
            log(f"quality: training step {step + 1}/{steps}, loss {loss.item():.3f}")
    return model.eval()


def bench_quality(args) -> list[dict]:
    from lightbrain.data.token_files import open_split
    from lightbrain.data.tokenizers import load_data_tokenizer
    from lightbrain.evaluation.language_modeling import evaluate_tokens

    with tempfile.TemporaryDirectory(prefix="lightbrain-bench-") as tmp:
        if args.checkpoint:
            from lightbrain.training.checkpoint import load_model

            if not args.data_dir:
                raise SystemExit("--checkpoint needs --data-dir: the prepared data (made with the checkpoint's "
                                 "tokenizer) whose validation split is scored")
            data_dir = Path(args.data_dir)
            model, _, _ = load_model(args.checkpoint)
            source = f"checkpoint {args.checkpoint}"
        elif SHARED_DATA.is_dir():
            seed_tiktoken()
            data_dir = Path(args.data_dir) if args.data_dir else Path(tmp) / "gpt2"
            if not args.data_dir:
                prepare("gpt2", data_dir)
            model = quick_trained_model(data_dir, args.quality_steps)
            source = f"seed model after {args.quality_steps} training steps"
        else:
            return [row("quality", "bits per byte", None, None, "",
                        note=f"skipped: {SHARED_DATA} is absent and no --checkpoint given")]
        tokenizer = load_data_tokenizer(data_dir)
        tokens = np.asarray(open_split(data_dir, "validation").tokens[:args.quality_tokens + 1], dtype=np.int64)
        num_bytes = len(tokenizer.decode_bytes([t for t in tokens[1:].tolist() if t != tokenizer.eot_id]))
        results = {}
        for name in ("fp32", "bf16", "int8"):
            variant = model if name == "fp32" else quantize_for_inference(model, name)
            results[name] = evaluate_tokens(variant, tokens, num_bytes, batch_size=8)
            log(f"quality {name}: {results[name]['bits_per_byte']:.4f} bits/byte")
    base = results["fp32"]["bits_per_byte"]
    rows = []
    for name, r in results.items():
        delta = r["bits_per_byte"] - base
        rows.append(row("quality", f"bits per byte, LightBrain {name} ({len(tokens) - 1:,} val tokens; {source})",
                        r["bits_per_byte"], None, "bits/byte", higher_is_better=False,
                        note="reference" if name == "fp32" else f"{delta:+.4f} vs fp32 ({delta / base:+.2%})"))
    return rows


# ---------------------------------------------------------------------------------------------- gpu

def peak_bf16_flops(name: str) -> float | None:
    """Dense bf16 peak of known data-centre GPUs, for model FLOPs utilisation."""
    for key, flops in (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12), ("A10", 125e12)):
        if key in name:
            return flops
    return None


GPU_BATCH = 32


def cuda_synced(fn):
    """fn, then a wait for the work it queued on the GPU, so that a timing covers the work, not its launch."""
    def run():
        fn()
        torch.cuda.synchronize()
    return run


def bench_gpu(args) -> list[dict]:
    """LightBrain and Hugging Face's GPT-2 of the same shape on one GPU, both in bf16 with fused AdamW
    and torch.compile for training, and both in bf16 for generation."""
    if not torch.cuda.is_available():
        log("no GPU")
        return [row("gpu", "GPU recipe", None, None, "", note="no GPU on this machine")]
    device = "cuda"
    name = torch.cuda.get_device_name(device)
    lb = lightbrain_model().to(device)
    lb_opt = lb.configure_optimizer(0.1, 6e-4, (0.9, 0.95), device)
    hf = hf_model().to(device)
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=6e-4, weight_decay=0.1, betas=(0.9, 0.95), fused=True)
    steps = {"lb": cuda_synced(train_step(torch.compile(lb), lb_opt, lightbrain_loss(True, device), GPU_BATCH, device)),
             "hf": cuda_synced(train_step(torch.compile(hf), hf_opt, hf_loss(True, device), GPU_BATCH, device))}
    tps = {who: GPU_BATCH * BLOCK / s for who, s in timed(steps, max(args.repeats, 10), warmup=3).items()}
    for who, value in tps.items():
        log(f"gpu train {who}: {value:.0f} tokens/s")
    peak = peak_bf16_flops(name)
    mfu = lb.flops_per_token() * tps["lb"] / peak if peak else None

    lb_fast = lb.to(torch.bfloat16).eval()
    hf_fast = hf_model(n_positions=256).to(device, torch.bfloat16).eval()
    rows = [row("gpu", f"{name}: train, batch {GPU_BATCH}x{BLOCK}, bf16 autocast, fused AdamW, torch.compile",
                tps["lb"], tps["hf"], "tokens/s",
                note=f"LightBrain MFU {mfu:.1%}" if mfu is not None else "MFU: peak of this GPU unknown")]
    for batch in (1, BATCH_PROMPTS):
        runs = {"lb": cuda_synced(lightbrain_generate(lb_fast, batch, device)),
                "hf": cuda_synced(hf_generate(hf_fast, batch, device))}
        seconds = timed(runs, args.repeats)
        log(f"gpu generate batch {batch}: " + ", ".join(f"{k} {v:.3f} s" for k, v in seconds.items()))
        if batch == 1:
            rows.append(row("gpu", f"{name}: decode {NEW_TOKENS} tokens, batch 1, bf16", seconds["lb"],
                            seconds["hf"], "s", higher_is_better=False,
                            note=f"{1000 * seconds['lb'] / NEW_TOKENS:.1f} ms/token"))
        else:
            n = batch * NEW_TOKENS
            rows.append(row("gpu", f"{name}: {batch} x {NEW_TOKENS} tokens, bf16", n / seconds["lb"],
                            n / seconds["hf"], "tokens/s"))
    return rows


# ---------------------------------------------------------------------------------------------- report

def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "bits/byte":
        return f"{value:.4f}"
    return f"{value:,.0f} {unit}"


def table(rows: list[dict]) -> str:
    lines = ["| section | setting | LightBrain | Hugging Face | LightBrain/HF | target | note |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ratio = "—"
        if r["lightbrain"] is not None and r["hf"]:
            value = r["lightbrain"] / r["hf"]
            ratio = f"{value:.2f}x " + ("(higher is better)" if r["higher_is_better"] else "(time: lower is better)")
        lines.append(f"| {r['section']} | {r['setting']} | {fmt(r['lightbrain'], r['unit'])} | "
                     f"{fmt(r['hf'], r['unit'])} | {ratio} | {r['target']} | {r['note']} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import transformers

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {cores} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"transformers {transformers.__version__}, Python {platform.python_version()}, "
            f"{datetime.date.today().isoformat()}")


def markers(section: str) -> tuple[str, str]:
    return f"<!-- bench:{section}:begin -->", f"<!-- bench:{section}:end -->"


def write_results(path: Path, reports: dict[str, str]) -> None:
    """Replace the generated block of each section that ran, keeping the other sections' blocks
    and the written notes around them, so one section can be rerun on its own."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    for section, report in reports.items():
        begin, end = markers(section)
        block = f"{begin}\n{report}\n{end}"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            text = head + block + rest.split(end, 1)[1]
        else:
            text = text.rstrip("\n") + f"\n\n{block}\n"
    atomic_write_text(path, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of: {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--prepare-repeats", type=int, default=1, help="runs of each data preparation")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true", help="also time LightBrain training under torch.compile")
    parser.add_argument("--checkpoint", help="quality: a trained checkpoint instead of a quick training run")
    parser.add_argument("--data-dir", help="quality: prepared data to score (default: ../shared/data with gpt2)")
    parser.add_argument("--quality-steps", type=int, default=150, help="quality: training steps of the quick model")
    parser.add_argument("--quality-tokens", type=int, default=16384, help="quality: validation tokens scored")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    parser.add_argument("--write", action="store_true",
                        help="write RESULTS.md even when only some sections ran (always written for a full run)")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    if args.repeats < 1 or args.prepare_repeats < 1:
        parser.error("--repeats and --prepare-repeats must be at least 1")
    torch.set_num_threads(args.threads)

    benches = {"train": bench_train, "decode": bench_decode, "batch": bench_batch, "prepare": bench_prepare,
               "quality": bench_quality, "gpu": bench_gpu}
    command = "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    reports = {}
    for section in SECTIONS:
        if section not in only:
            continue
        log(f"== {section}")
        stall, start = cpu_stall_us(), time.perf_counter()
        rows = benches[section](args)
        pressure = ""
        if stall is not None:
            share = min(1.0, (cpu_stall_us() - stall) / 1e6 / (time.perf_counter() - start))
            pressure = (f" CPU pressure {share:.0%} (the share of the time other runnable tasks waited for a CPU: "
                        "near 0% means these numbers are this machine's own).")
        runs = {"prepare": args.prepare_repeats, "quality": 1}.get(section, args.repeats)
        timing = f"medians of {runs} runs" if runs > 1 else "one run"
        reports[section] = (f"### {section}\n\n{machine()}; `{command}`, {timing}."
                            f"{pressure}\n\n{table(rows)}")
        print(reports[section] + "\n", flush=True)
    if args.write or set(only) == set(SECTIONS):
        write_results(args.results, reports)
        log(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
