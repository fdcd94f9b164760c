"""Reliability: training survives crashes, full disks and bad input, and loading never runs untrusted code.

Each test is one row of docs/reliability.md. Tiny configs throughout; only the SIGKILL test needs
subprocesses (a killed process must be a real one).
"""

from __future__ import annotations

import ast
import contextlib
import errno
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lightbrain import DISCLAIMER
from lightbrain.cli import main as cli_main
from lightbrain.config import ConfigError, DataConfig, load_config
from lightbrain.data.loader import BatchSampler, DataTooSmallError, sequential_batches
from lightbrain.data.prepare import prepare_data
from lightbrain.data.sources import DataError
from lightbrain.data.token_files import TokenFile, TokenFileError, open_split, read_meta, split_documents, write_token_file
from lightbrain.data.tokenizers import EOT, MedicalBPETokenizer, train_medical_bpe
from lightbrain.inference.generate import generate_text, stream_text
from lightbrain.training.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from lightbrain.training.trainer import TrainingError, train

from conftest import REPO, tiny_config, tiny_corpus, write_token_dir

BEST = "lightbrain_tiny_v1.0.pt"
LAST = "lightbrain_tiny_v1.0.last.pt"
TEST_TINY = REPO / "configs" / "test_tiny.yaml"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy machine two threads per step can be 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: equal snapshots mean nothing was lost or changed."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.tmp"))


def records(log_dir: Path) -> list[dict]:
    """metrics.jsonl's records; a line that does not parse fails the test."""
    return [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]


def fast(**overrides) -> dict:
    """Train settings for the quickest meaningful runs."""
    return {"eval_iters": 2, **overrides}


@pytest.fixture(scope="module")
def earlier_run(tiny_data, tmp_path_factory) -> Path:
    """A finished 10-step run (checkpoints at 5 and 10); tests copy it before touching it."""
    out = tmp_path_factory.mktemp("earlier_run")
    train(tiny_config(tiny_data, out, **fast(max_iters=10, eval_interval=5, checkpoint_interval=5)))
    return out


def copy_run(earlier_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(earlier_run, tmp_path / "run")
    return tmp_path / "run"


def bpe_data_config(sources, out_dir: Path, **kw) -> DataConfig:
    return DataConfig(sources=[str(s) for s in sources], tokenizer="medical-bpe", bpe_vocab_size=300,
                      out_dir=str(out_dir), validation_one_in=5, num_workers=1, **kw)


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- crashes


def test_sigkill_mid_training_then_resume_matches_uninterrupted_run(tiny_data, tmp_path):
    """SIGKILL at a random step (no handler runs), then `lightbrain train --resume`: the same final loss and
    the same per-step losses as a run that was never interrupted, and only the steps since the last
    checkpoint are redone."""
    max_iters, every = 150, 5
    settings = dict(max_iters=max_iters, lr_decay_iters=max_iters, eval_interval=75, checkpoint_interval=every,
                    log_interval=1, eval_iters=2, num_threads=1)
    reference = train(tiny_config(tiny_data, tmp_path / "reference", **settings))

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "lightbrain", "train", "-c", str(TEST_TINY), "--no-progress",
           f"train.data_dir={tiny_data}", f"train.out_dir={out}/models", f"train.log_dir={out}/logs",
           *(f"train.{k}={v}" for k, v in settings.items())]
    target = random.Random().randint(2 * every, max_iters // 3)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "logs" / "metrics.jsonl"
    logged = 0
    deadline = time.time() + 240
    while logged < target and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
        if metrics.is_file():
            iters = [json.loads(line)["iter"] for line in metrics.read_text().splitlines()
                     if line.endswith("}") and '"kind": "train"' in line]
            logged = max(iters, default=0)
    assert proc.poll() is None, f"the run ended before the kill at step {target}: {proc.communicate()[1][-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    killed_log = (out / "logs" / "metrics.jsonl").read_text().splitlines()
    last_logged = max(json.loads(line)["iter"] for line in killed_log  # the kill may cut the last line short
                      if line.endswith("}") and '"kind": "train"' in line)
    saved = load_checkpoint(out / "models" / LAST)["iter_num"]
    assert saved % every == 0 and 0 <= last_logged - saved <= every, (target, last_logged, saved)

    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    assert summary["iter_num"] == max_iters and summary["stopped_by"] == "max_iters"
    assert summary["final_val_loss"] == pytest.approx(reference.final_val_loss, abs=1e-5)
    assert f"resumed from {out / 'models' / LAST} at iteration {saved}" in (out / "logs" / "training.log").read_text()
    # the log reads as one run: each step once, with the uninterrupted run's loss
    got = [(r["kind"], r["iter"], r.get("loss", r.get("val_loss"))) for r in records(out / "logs")]
    want = [(r["kind"], r["iter"], r.get("loss", r.get("val_loss"))) for r in reference.history]
    assert [g[:2] for g in got] == [w[:2] for w in want]
    for g, w in zip(got, want):
        assert g[2] == pytest.approx(w[2], abs=1e-5), (g, w)
    a, b = load_checkpoint(reference.last_checkpoint)["model"], load_checkpoint(out / "models" / LAST)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)
    assert temp_files(out) == []  # a temp file the kill left mid-write is cleaned at the next start


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
                                     RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")],
                         ids=["ENOSPC", "torch-zip-writer"])
def test_checkpoint_write_failure_keeps_previous_checkpoint(earlier_run, tmp_path, monkeypatch, failure):
    """torch.save dies halfway (full disk: an OSError, or the RuntimeError torch's zip writer really raises):
    a clear error naming the file, the previous checkpoint loads as before, no temp file is left."""
    path = copy_run(earlier_run, tmp_path) / "models" / LAST
    before = path.read_bytes()
    model, tokenizer, ckpt = load_model(path)
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        Path(f).write_bytes(Path(f).read_bytes()[: Path(f).stat().st_size // 2])
        raise failure

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(CheckpointError, match=r"could not write the checkpoint .*lightbrain_tiny_v1\.0\.last\.pt") as exc:
        save_checkpoint(path, model=model, config=load_config(TEST_TINY), tokenizer=tokenizer.to_dict(), iter_num=99)
    assert "MiB free" in str(exc.value) and "previous" in str(exc.value)
    assert path.read_bytes() == before and load_checkpoint(path)["iter_num"] == ckpt["iter_num"]
    assert temp_files(path.parent) == []


def test_training_stops_cleanly_when_a_checkpoint_cannot_be_written(tiny_data, tmp_path, monkeypatch):
    """The disk fills at the step-10 checkpoint: training stops with the checkpoint error, the step-5
    checkpoint is intact, and a resume after freeing space finishes like an uninterrupted run. A stale temp
    file from an earlier kill and a metrics line cut short are cleaned up on the way."""
    settings = fast(max_iters=15, eval_interval=5, checkpoint_interval=5, log_interval=1)
    models = tmp_path / "models"
    models.mkdir()
    stale = models / f".{LAST}.k1ll3d.tmp"
    stale.write_bytes(b"PK\x03\x04 half a checkpoint")
    real_save = torch.save

    def full_disk_at_10(obj, f, *args, **kwargs):
        if obj["iter_num"] == 10:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_at_10)
    with pytest.raises(CheckpointError, match="No space left on device"):
        train(tiny_config(tiny_data, tmp_path, **settings))
    assert not stale.exists() and temp_files(tmp_path) == []
    assert load_checkpoint(models / LAST)["iter_num"] == 5
    with open(tmp_path / "logs" / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "iter": 11, "lo')  # what a kill mid-write leaves

    monkeypatch.setattr(torch, "save", real_save)
    resumed = train(tiny_config(tiny_data, tmp_path, **settings), resume=True)
    reference = train(tiny_config(tiny_data, tmp_path / "reference", **settings))
    assert resumed.iter_num == 15 and resumed.final_val_loss == pytest.approx(reference.final_val_loss, abs=1e-6)
    assert [(r["kind"], r["iter"]) for r in records(tmp_path / "logs")] == \
        [(r["kind"], r["iter"]) for r in reference.history]


@contextlib.contextmanager
def small_filesystem(where: Path, size_bytes: int):
    """A real filesystem that fills up: a size-limited tmpfs (needs root; the test skips without it)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root; the injected-failure tests cover the same paths")
    where.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        # lazy: a failing test's traceback may still hold a file open there
        subprocess.run(["umount", "--lazy", str(where)], capture_output=True)


def test_real_full_disk_checkpoint_and_token_file(earlier_run, tmp_path):
    model, tokenizer, _ = load_model(earlier_run / "models" / BEST)
    config = load_config(TEST_TINY)
    with small_filesystem(tmp_path / "disk", 512 * 1024) as disk:
        path = save_checkpoint(disk / BEST, model=model, config=config, tokenizer=tokenizer.to_dict(), iter_num=1)
        before = path.read_bytes()
        with pytest.raises(CheckpointError, match=r"could not write the checkpoint .*MiB free"):
            save_checkpoint(path, model=model, config=config, tokenizer=tokenizer.to_dict(), iter_num=2,
                            training_state={"optimizer": [{"big": torch.zeros(300_000)}]})
        assert path.read_bytes() == before and load_checkpoint(path)["iter_num"] == 1
        with pytest.raises(OSError, match=r"No space left on device.*train\.bin") as exc:
            write_token_file(disk / "train.bin", [np.zeros(600_000)], np.dtype(np.uint16))
        assert exc.value.errno == errno.ENOSPC
        assert sorted(p.name for p in disk.iterdir()) == [BEST]  # no train.bin, no temp file


def test_prepare_disk_full_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    """The disk fills while validation.bin is written: an error naming the file, no temp file, and the
    folder is never left looking finished with mismatched files; a re-run then completes."""
    from lightbrain.data import prepare as prepare_module

    good = bpe_data_config([write_jsonl(tmp_path / "v1" / "docs.jsonl", tiny_corpus(60))], tmp_path / "processed")
    prepare_data(good, progress=False)
    old_validation = (tmp_path / "processed" / "validation.bin").read_bytes()
    real_write = prepare_module.write_token_file

    def disk_fills(path, chunks, dtype):
        if Path(path).name in ("validation.bin", ".validation.bin.staging"):
            def some_then_full():
                yield from itertools.islice(chunks, 1)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(path, some_then_full(), dtype)
        return real_write(path, chunks, dtype)

    monkeypatch.setattr(prepare_module, "write_token_file", disk_fills)
    bigger = bpe_data_config([write_jsonl(tmp_path / "v2" / "docs.jsonl", tiny_corpus(90, seed=5))],
                             tmp_path / "processed")
    with pytest.raises(OSError, match=r"No space left on device.*validation\.bin"):
        prepare_data(bigger, progress=False)
    processed = tmp_path / "processed"
    assert temp_files(processed) == []
    assert (processed / "validation.bin").read_bytes() == old_validation  # the old file, whole, or nothing
    if (processed / "meta.json").exists():  # a meta.json must describe the files beside it
        for split in ("train", "validation"):
            open_split(processed, split)
    else:
        with pytest.raises(TokenFileError, match="run `lightbrain prepare`"):
            read_meta(processed)

    monkeypatch.setattr(prepare_module, "write_token_file", real_write)
    meta = prepare_data(bigger, progress=False)
    assert len(open_split(processed, "validation")) == meta["splits"]["validation"]["tokens"]


def test_token_file_write_failure_keeps_previous_file(tmp_path):
    path = tmp_path / "train.bin"
    write_token_file(path, [np.arange(100)], np.dtype(np.uint16))

    def chunks():
        yield np.arange(1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match=r"No space left on device.*unchanged.*train\.bin"):
        write_token_file(path, chunks(), np.dtype(np.uint16))
    assert np.array_equal(np.fromfile(path, np.uint16), np.arange(100)) and temp_files(tmp_path) == []


# ------------------------------------------------------------------------------------- bad checkpoints


def test_corrupted_checkpoint_bytes_are_an_error_not_wrong_weights(earlier_run, tmp_path):
    """Flipped bytes inside the weights used to load silently (torch.load does not check the zip CRCs)."""
    run = copy_run(earlier_run, tmp_path)
    data = (run / "models" / LAST).read_bytes()
    for where in (0.02, 0.3, 0.5, 0.8):
        broken = bytearray(data)
        start = int(len(broken) * where)
        broken[start:start + 16] = bytes(b ^ 0xFF for b in broken[start:start + 16])
        (run / "models" / LAST).write_bytes(bytes(broken))
        with pytest.raises(CheckpointError, match=r"corrupted.*CRC-32"):
            load_checkpoint(run / "models" / LAST)
    # resuming from it stops before writing anything
    before = snapshot(run / "models")
    with pytest.raises(CheckpointError, match="corrupted"):
        train(_config_for(run), resume=True)
    assert snapshot(run / "models") == before


def _config_for(run: Path, **overrides):
    """The earlier run's recipe, pointed at a copy of it."""
    cfg = load_checkpoint(run / "models" / BEST)["config"]
    return tiny_config(Path(cfg["train"]["data_dir"]), run, **fast(max_iters=20, eval_interval=5,
                                                                   checkpoint_interval=5, **overrides))


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('LB_PWNED', '/tmp/lightbrain_reliability_pwned')}",))


@pytest.mark.parametrize("kind", ["tensor", "state_dict", "json", "yaml", "empty", "random", "bare_pickle"])
def test_files_that_are_not_checkpoints(tmp_path, monkeypatch, kind):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("LB_PWNED", str(marker))
    path = tmp_path / "model.pt"
    if kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "state_dict":  # weights alone, as other projects save them
        torch.save({"transformer.wte.weight": torch.zeros(4, 2)}, path)
    elif kind == "json":
        path.write_text(json.dumps({"format": "lightbrain-checkpoint"}))
    elif kind == "yaml":
        path.write_text("model:\n  n_layer: 2\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    else:  # a pickle stream (old torch.save format) that runs a command when unpickled
        import pickle

        path.write_bytes(pickle.dumps({"format": "lightbrain-checkpoint", "x": Payload()}))
    with pytest.raises(CheckpointError, match="not a LightBrain checkpoint") as exc:
        load_model(path)
    assert str(path) in str(exc.value)
    assert not marker.exists()


# ---------------------------------------------------------------------------------- untrusted loading

UNSAFE_CALLS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("dill", "load"),
                ("joblib", "load"), ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
                ("jit", "load"), ("marshal", "loads")}


def _const_kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_no_loading_path_in_the_package_can_unpickle():
    """Every torch.load in the package passes weights_only=True; nothing calls pickle/yaml.load/eval/exec,
    np.load(allow_pickle=True) or trust_remote_code=True."""
    problems, torch_loads = [], 0
    for path in sorted((REPO / "src" / "lightbrain").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            func = node.func
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else \
                func.value.attr if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Attribute) else None
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            if (owner, name) == ("torch", "load"):
                torch_loads += 1
                if _const_kw(node, "weights_only") is not True:
                    problems.append(f"{where}: torch.load without weights_only=True")
            elif (owner, name) in UNSAFE_CALLS:
                problems.append(f"{where}: {owner}.{name}")
            elif owner in ("np", "numpy") and name == "load" and _const_kw(node, "allow_pickle") is True:
                problems.append(f"{where}: np.load(allow_pickle=True)")
            elif isinstance(func, ast.Name) and name in ("eval", "exec"):
                problems.append(f"{where}: {name}()")
            if _const_kw(node, "trust_remote_code") is True:
                problems.append(f"{where}: trust_remote_code=True")
    assert torch_loads >= 1  # the scan does see the checkpoint loader
    assert problems == []


def test_hf_import_never_unpickles_pytorch_model_bin(tmp_path, monkeypatch, tiny_tokenizer):
    """A Transformers folder whose weights are a pickle (pytorch_model.bin) is refused without loading it."""
    from lightbrain.config import ModelConfig
    from lightbrain.export.hf import ExportError, export_model_hf, import_hf, import_hf_checkpoint
    from lightbrain.models.lightbrain_tiny import LightBrainTiny

    marker = tmp_path / "pwned"
    monkeypatch.setenv("LB_PWNED", str(marker))
    folder = tmp_path / "hf"
    model = LightBrainTiny(ModelConfig(vocab_size=tiny_tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2,
                                       n_embd=16, dropout=0.0))
    export_model_hf(model, tiny_tokenizer, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"transformer.wte.weight": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(ExportError, match="safetensors weights only"):
        import_hf(folder)
    with pytest.raises(ExportError, match="safetensors weights only"):
        import_hf_checkpoint(folder, tmp_path / "imported.pt")
    assert not marker.exists() and not (tmp_path / "imported.pt").exists()


def test_yaml_recipe_cannot_construct_objects(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"train: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(recipe)
    assert not marker.exists()


# -------------------------------------------------------------------------------------------- bad data


@pytest.fixture()
def good_processed(tmp_path) -> Path:
    out = tmp_path / "processed"
    prepare_data(bpe_data_config([write_jsonl(tmp_path / "good" / "docs.jsonl", tiny_corpus(60))], out), progress=False)
    return out


def _bad_source(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "empty_folder":
        return folder
    if kind == "empty_texts":
        return write_jsonl(folder / "docs.jsonl", ["", "   ", "\n\n"])
    if kind == "all_duplicates":
        return write_jsonl(folder / "docs.jsonl", ["The patient reported chest pain."] * 50)
    if kind == "one_document":
        return write_jsonl(folder / "docs.jsonl", ["A single short note."])
    (folder / "notes.txt").write_bytes("Fever and cough.\n".encode() + "Caf\xe9 au lait spots.".encode("latin-1"))
    return folder / "notes.txt"


@pytest.mark.parametrize("kind,match", [
    ("empty_folder", "no text files found"),
    ("empty_texts", "holds no text after cleaning"),
    ("all_duplicates", "the corpus is all duplicates"),
    ("one_document", "split is empty"),
    ("not_utf8", r"notes\.txt: not valid UTF-8 at byte offset 20 \(byte 0xe9\)"),
])
def test_bad_corpus_is_a_clear_error_and_keeps_previous_data(good_processed, tmp_path, kind, match):
    before = snapshot(good_processed)
    with pytest.raises(DataError, match=match):
        prepare_data(bpe_data_config([_bad_source(tmp_path, kind)], good_processed, force=True), progress=False)
    assert snapshot(good_processed) == before


def test_prepare_cli_reports_bad_data_without_a_traceback(good_processed, tmp_path, capsys):
    before = snapshot(good_processed)
    code = cli_main(["prepare", "--quiet", "--force", "--source", str(_bad_source(tmp_path, "not_utf8")),
                     "--tokenizer", "medical-bpe", "--vocab-size", "300", "--out", str(good_processed)])
    err = capsys.readouterr().err
    assert code == 1 and "not valid UTF-8" in err and "iconv" in err and "Traceback" not in err
    assert snapshot(good_processed) == before


def test_one_huge_document_among_tiny_ones(tmp_path):
    """One 200k-token document beside 100 short ones: prepare keeps it whole and training runs on it."""
    rng = random.Random(0)
    huge = " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
                    for _ in range(45_000))
    source = write_jsonl(tmp_path / "src" / "docs.jsonl", tiny_corpus(100) + [huge])
    meta = prepare_data(bpe_data_config([source], tmp_path / "processed"), progress=False)
    tokenizer = MedicalBPETokenizer.from_file(tmp_path / "processed" / "tokenizer.json")
    longest = max((doc for split in ("train", "validation")
                   for doc in split_documents(open_split(tmp_path / "processed", split).tokens, meta["eot_id"])), key=len)
    assert len(longest) >= 200_000
    assert tokenizer.decode_bytes(longest.tolist()).decode("utf-8") == huge
    result = train(tiny_config(tmp_path / "processed", tmp_path, **fast(max_iters=4, eval_interval=4)))
    assert result.iter_num == 4 and np.isfinite(result.final_val_loss)


def big_vocab_tokenizer(size: int = 70_000) -> MedicalBPETokenizer:
    """A byte-level tokenizer with `size` tokens: bytes, end-of-text, then "<xN>" tokens, of which those from
    65,530 up are matched in text, so encoding "<x69999>" gives id 69,999."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab[EOT] = len(vocab)
    vocab.update({f"<x{i}>": i for i in range(len(vocab), size)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOT])
    tok.add_tokens([f"<x{i}>" for i in range(65_530, size)])
    return MedicalBPETokenizer(tok.to_str())


def test_vocab_over_65535_uses_uint32_end_to_end(tmp_path):
    tokenizer = big_vocab_tokenizer()
    assert tokenizer.vocab_size == 70_000
    rng = random.Random(1)
    docs = [" ".join(f"<x{rng.randrange(65_530, 70_000)}> w{rng.randrange(9)}" for _ in range(30)) for _ in range(40)]
    data = write_token_dir(tmp_path / "data", docs[:34], docs[34:], tokenizer)
    meta = read_meta(data)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70_000
    train_tokens = open_split(data, "train").tokens
    assert train_tokens.dtype == np.uint32 and int(train_tokens.max()) > 65_535
    decoded = [tokenizer.decode(d.tolist()) for d in split_documents(train_tokens, tokenizer.eot_id)]
    assert decoded == docs[:34]
    # the loader hands the ids over unchanged, both ways it reads them
    sampler = BatchSampler(TokenFile(data / "train.bin", "uint32"), block_size=32, batch_size=4, seed=0)
    starts = sampler.next_starts()
    sampler.load_state_dict({"epoch": 0, "position": 0, "seed": 0})
    x, y = sampler.next_batch()
    for row, s in enumerate(starts):
        assert x[row].tolist() == train_tokens[s:s + 32].tolist() and y[row].tolist() == train_tokens[s + 1:s + 33].tolist()
    targets = torch.cat([yb[yb >= 0] for _, yb in sequential_batches(train_tokens, 32, 8)])
    assert targets.tolist() == train_tokens[1:].tolist()
    result = train(tiny_config(data, tmp_path, **fast(max_iters=3, eval_interval=3)))
    model, loaded_tokenizer, _ = load_model(result.best_checkpoint)
    assert model.config.vocab_size == 70_000 and loaded_tokenizer.encode("<x69999>") == [69_999]
    # ids that do not fit the dtype, or negative ones, are refused rather than wrapped
    with pytest.raises(TokenFileError, match="does not fit uint16"):
        write_token_file(tmp_path / "x.bin", [np.array([70_000])], np.dtype(np.uint16))
    with pytest.raises(TokenFileError, match="negative token id -1"):
        write_token_file(tmp_path / "x.bin", [np.array([5, -1])], np.dtype(np.uint32))
    assert not (tmp_path / "x.bin").exists()


# ------------------------------------------------------------------------------------ bad train settings


def test_block_size_larger_than_the_data_is_clear_and_keeps_checkpoints(earlier_run, tiny_data, tmp_path, capsys):
    run = copy_run(earlier_run, tmp_path)
    before = snapshot(run / "models")
    code = cli_main(["train", "-c", str(TEST_TINY), f"train.data_dir={tiny_data}", f"train.out_dir={run}/models",
                     f"train.log_dir={run}/logs", "model.block_size=4096", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "fewer than one window of model.block_size + 1 = 4097" in err and "Traceback" not in err
    assert snapshot(run / "models") == before


def test_batch_larger_than_the_data(tiny_data, tmp_path):
    """More rows per batch than the split has windows: random overlapping windows, said in the log."""
    tokens = open_split(tiny_data, "train").tokens
    sampler = BatchSampler(tokens, block_size=32, batch_size=10_000, seed=0)
    starts = sampler.next_starts()
    assert len(starts) == 10_000 and starts.min() >= 0 and starts.max() + 33 <= len(tokens)
    state = sampler.state_dict()
    nxt = sampler.next_starts()
    again = BatchSampler(tokens, block_size=32, batch_size=10_000, seed=0)
    again.load_state_dict(state)
    assert np.array_equal(again.next_starts(), nxt)
    result = train(tiny_config(tiny_data, tmp_path, **fast(batch_size=len(tokens) // 32 + 50, max_iters=2,
                                                             eval_interval=2, eval_iters=1)))
    assert result.iter_num == 2 and np.isfinite(result.final_train_loss)
    assert "batches are random overlapping windows" in (tmp_path / "logs" / "training.log").read_text()


@pytest.mark.parametrize("override,match", [
    ("train.learning_rate=0", "learning_rate must be positive"),
    ("train.learning_rate=-3e-4", "learning_rate must be positive"),
    ("train.learnin_rate=3e-4", "did you mean 'learning_rate'"),
    ("train.max_iters=ten", "max_iters must be an integer"),
    ("model.n_embd=32.5", "n_embd must be an integer"),
])
def test_bad_config_fails_before_anything_is_written(earlier_run, tiny_data, tmp_path, capsys, override, match):
    run = copy_run(earlier_run, tmp_path)
    before = snapshot(run)
    code = cli_main(["train", "-c", str(TEST_TINY), f"train.data_dir={tiny_data}", f"train.out_dir={run}/models",
                     f"train.log_dir={run}/logs", override, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "config error" in err and match in err.replace("\\'", "'")
    assert snapshot(run) == before


def test_resume_onto_other_model_or_tokenizer_is_refused_and_keeps_checkpoints(earlier_run, tmp_path, tiny_corpus_docs):
    run = copy_run(earlier_run, tmp_path)
    before = snapshot(run / "models")
    other_model = _config_for(run)
    other_model.model.n_embd = 48
    with pytest.raises(CheckpointError, match=r"shape mismatches.*transformer\.wte\.weight: checkpoint \(\d+, 32\)"):
        train(other_model, resume=True)
    other_tok = train_medical_bpe(tiny_corpus(200, seed=7), vocab_size=400)
    other_data = write_token_dir(tmp_path / "other_data", tiny_corpus_docs[:360], tiny_corpus_docs[360:], other_tok)
    cfg = _config_for(run)
    cfg.train.data_dir = str(other_data)
    with pytest.raises(TrainingError, match="another tokenizer"):
        train(cfg, resume=True)
    assert snapshot(run / "models") == before


@pytest.fixture()
def tiny_corpus_docs() -> list[str]:
    return tiny_corpus(400)


# ---------------------------------------------------------------------------------------- non-finite


def _poison_forward(monkeypatch, from_call: int):
    """Training forwards from the `from_call`-th on return a NaN loss."""
    from lightbrain.models.lightbrain_tiny import LightBrainTiny

    original, calls = LightBrainTiny.forward, {"n": 0}

    def poisoned(self, idx, targets=None, **kw):
        logits, loss = original(self, idx, targets, **kw)
        if self.training and targets is not None:
            calls["n"] += 1
            if calls["n"] >= from_call:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(LightBrainTiny, "forward", poisoned)


def test_failed_fresh_run_leaves_an_earlier_runs_checkpoints(earlier_run, tmp_path, monkeypatch):
    """A new run in the same out_dir whose very first step fails writes nothing: it used to replace both
    checkpoints with untrained weights at iteration 0, then say "the last good checkpoints are intact"."""
    run = copy_run(earlier_run, tmp_path)
    before = snapshot(run / "models")
    _poison_forward(monkeypatch, from_call=1)
    with pytest.raises(TrainingError, match="loss became nan at iteration 0"):
        train(_config_for(run))
    assert snapshot(run / "models") == before


def test_nan_evaluation_never_becomes_the_best_checkpoint(tiny_data, tmp_path, monkeypatch):
    """An evaluation that comes out NaN is logged but neither saved as best nor allowed to block later bests."""
    from lightbrain.training import trainer

    real = trainer.estimate_loss
    evals = {"n": 0}

    def nan_at_iterations_0_and_5(*args, **kwargs):
        evals["n"] += 1
        losses = real(*args, **kwargs)
        return {**losses, "val": float("nan")} if evals["n"] <= 2 else losses

    monkeypatch.setattr(trainer, "estimate_loss", nan_at_iterations_0_and_5)
    result = train(tiny_config(tiny_data, tmp_path, **fast(max_iters=10, eval_interval=5)))
    evals_logged = [r for r in result.history if r["kind"] == "eval"]
    assert [r["iter"] for r in evals_logged] == [0, 5, 10] and np.isnan(evals_logged[1]["val_loss"])
    assert np.isnan(evals_logged[0]["val_loss"])
    best = load_checkpoint(result.best_checkpoint)
    assert best["iter_num"] == 10 and np.isfinite(best["best_val_loss"])
    assert result.best_val_loss == pytest.approx(evals_logged[2]["val_loss"])


def test_nan_weights_are_never_saved(tiny_data, tmp_path, monkeypatch):
    """Weights that went NaN while the loss still looked finite: training stops at the next checkpoint
    instead of writing them over the last good one."""
    from lightbrain.training import trainer

    real_build = trainer.build_optimizer

    def build_then_poison(model, config, device):
        optimizers = real_build(model, config, device)
        opt, step, count = optimizers[0], optimizers[0].step, {"n": 0}

        def poisoned_step(*args, **kwargs):
            out = step(*args, **kwargs)
            count["n"] += 1
            if count["n"] == 10:  # weights go bad after step 10, just before its checkpoint
                with torch.no_grad():
                    model.transformer.h[0].mlp.c_fc.weight.fill_(float("nan"))
            return out

        opt.step = poisoned_step
        return optimizers

    monkeypatch.setattr(trainer, "build_optimizer", build_then_poison)
    with pytest.raises(TrainingError, match="weights hold NaN or infinity at iteration 10"):
        train(tiny_config(tiny_data, tmp_path, **fast(max_iters=20, eval_interval=5)))
    last = load_checkpoint(tmp_path / "models" / LAST)
    assert last["iter_num"] == 5 and all(torch.isfinite(v).all() for v in last["model"].values())


# ------------------------------------------------------------------------------------------ generation


def test_empty_prompt_and_prompt_longer_than_the_context(earlier_run, capsys):
    model, tokenizer, _ = load_model(earlier_run / "models" / BEST)
    assert isinstance(generate_text(model, tokenizer, "", max_new_tokens=8, temperature=0, stop_at_eot=False), str)
    long_prompt = " ".join(tiny_corpus(20))
    assert len(tokenizer.encode(long_prompt)) > 10 * model.config.block_size
    text = generate_text(model, tokenizer, long_prompt, max_new_tokens=50, temperature=0, stop_at_eot=False)
    assert text and text == "".join(stream_text(model, tokenizer, long_prompt, 50, temperature=0, stop_at_eot=False))
    code = cli_main(["generate", "--checkpoint", str(earlier_run / "models" / BEST), "-p", "", "-n", "5", "--seed", "0"])
    out = capsys.readouterr()
    assert code == 0 and DISCLAIMER in out.err
