"""The scripts a fresh clone starts with: the quickstart end to end (a smoke run on real data), the thin
wrappers, the project structure, the Makefile and the packaging files."""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

from lightbrain import DISCLAIMER
from lightbrain.training.checkpoint import load_model

from conftest import REPO, tiny_corpus

PROMPTS = ("The patient presented with symptoms of fever and cough.", "In a study on cardiovascular disease,")


def bash(*args, env=None, cwd=REPO, timeout=300):
    full_env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHON_BIN": sys.executable, **(env or {})}
    return subprocess.run(["bash", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=full_env,
                          timeout=timeout)


def test_create_project_structure_twice(tmp_path):
    folders = ["data/raw", "data/processed", "data/external/pretrained", "models", "logs/tensorboard"]
    first = subprocess.run([sys.executable, REPO / "create_project_structure.py", "--root", tmp_path],
                           capture_output=True, text=True, check=True)
    assert all((tmp_path / f).is_dir() for f in folders)
    assert first.stdout.count("created") == len(folders)
    (tmp_path / "data/raw/notes.txt").write_text("kept")
    again = subprocess.run([sys.executable, REPO / "create_project_structure.py", "--root", tmp_path],
                           capture_output=True, text=True, check=True)
    assert again.stdout.count("exists") == len(folders) and "created" not in again.stdout
    assert (tmp_path / "data/raw/notes.txt").read_text() == "kept"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "models").write_text("a file where a folder belongs")
    clash = subprocess.run([sys.executable, REPO / "create_project_structure.py", "--root", tmp_path / "other"],
                           capture_output=True, text=True)
    assert clash.returncode != 0 and "exists and is not a folder" in clash.stderr


@pytest.fixture(scope="module")
def quickstart(shared_data, tiktoken_cache, tmp_path_factory):
    """The whole quickstart in smoke mode on real data (the PubMedQA slice of ../shared/data)."""
    out = tmp_path_factory.mktemp("quickstart")
    r = bash("scripts/quickstart.sh", "--quick", "--no-setup", "--source", shared_data / "pubmedqa", "--out", out,
             env={"TIKTOKEN_CACHE_DIR": str(tiktoken_cache)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r


def test_quickstart_goes_from_data_to_model_plots_and_samples(quickstart, shared_data):
    out, r = quickstart
    meta = json.loads((out / "data/processed/meta.json").read_text())
    assert [s["type"] for s in meta["sources"]] == ["pubmedqa"] and meta["splits"]["train"]["documents"] == 500

    result = json.loads((out / "logs/train_result.json").read_text())
    ckpt = out / "models/lightbrain_tiny_v1.0.pt"
    assert result["best_checkpoint"] == str(ckpt) and result["iter_num"] > 0
    model, tokenizer, saved = load_model(ckpt)
    assert tokenizer.name == "gpt2"
    records = [json.loads(line) for line in (out / "logs/metrics.jsonl").read_text().splitlines()]
    evals = [rec for rec in records if rec["kind"] == "eval"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]  # it learned something

    evaluation = json.loads((out / "logs/eval.json").read_text())
    assert evaluation["tokens"] == 8191 and 0 < evaluation["bits_per_byte"] < 10

    for png in ("training_curves.png", "attention.png"):
        assert (out / "logs" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    samples = (out / "logs/samples.txt").read_text()
    assert samples.startswith(f"# {DISCLAIMER}")
    for prompt in PROMPTS:
        assert prompt in samples
        assert len(samples.split(prompt, 1)[1].strip()) > 0  # a continuation follows the prompt

    card = (out / "models/MODEL_CARD.md").read_text()
    assert f"| parameters | {model.get_num_params():,} " in card
    assert f"| optimizer steps | {result['iter_num']} of max_iters" in card
    assert f"| tokens seen | {result['tokens_seen']:,}" in card
    assert f"{saved['best_val_loss']:.4f} nats/token" in card
    assert "pubmedqa" in card and "| validation | 500 |" in card and "bits per byte" in card
    assert DISCLAIMER in card and "HIPAA" in card and "## Intended use" in card and "## Limitations" in card

    # it ends by saying where everything is
    tail = r.stdout[r.stdout.index("Everything this run made"):]
    for path in (ckpt, out / "models/MODEL_CARD.md", out / "logs/eval.json", out / "logs/training_curves.png",
                 out / "logs/samples.txt", out / "logs/metrics.jsonl"):
        assert str(path) in tail and path.exists()
    assert DISCLAIMER in r.stdout.splitlines()[-1]


def test_quickstart_without_the_hub_says_how_to_use_local_data(tmp_path):
    r = bash("scripts/quickstart.sh", "--quick", "--no-setup", "--out", tmp_path,
             env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert r.returncode == 1
    assert "Hugging Face hub" in r.stderr  # prepare's own error is shown
    assert "SOURCE=/path/to/data bash scripts/quickstart.sh" in r.stderr and "--source /path/to/data" in r.stderr
    assert not (tmp_path / "models/lightbrain_tiny_v1.0.pt").exists()
    bad = bash("scripts/quickstart.sh", "--bogus")
    assert bad.returncode == 2 and "unknown argument '--bogus'" in bad.stderr


def test_wrappers_pass_arguments_through(quickstart, tmp_path):
    out, _ = quickstart
    ckpt = out / "models/lightbrain_tiny_v1.0.pt"
    gen = bash("scripts/generate_text.sh", "--checkpoint", ckpt, "-p", "Chest pain", "-n", 8, "--seed", 3,
               "--no-stream")
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("Chest pain") and DISCLAIMER in gen.stderr

    raw = tmp_path / "raw"
    raw.mkdir()
    for i, doc in enumerate(tiny_corpus(60)):
        (raw / f"note{i}.txt").write_text(doc)
    prep = bash("scripts/prepare_data.sh", "--source", raw, "--tokenizer", "medical-bpe", "--vocab-size", 300,
                "--out", tmp_path / "processed", "-q")
    assert prep.returncode == 0, prep.stderr
    meta = json.loads((tmp_path / "processed/meta.json").read_text())
    assert meta["tokenizer"]["name"] == "medical-bpe" and meta["vocab_size"] == 300

    train = bash("scripts/train_model.sh", "-c", "configs/test_tiny.yaml", "--data-dir", tmp_path / "processed",
                 "--out-dir", tmp_path / "models", f"train.log_dir={tmp_path / 'logs'}", "--max-iters", 3,
                 "--no-progress", "train.eval_interval=3", "model.block_size=16")
    assert train.returncode == 0, train.stderr
    assert json.loads(train.stdout)["iter_num"] == 3
    assert (tmp_path / "models/MODEL_CARD.md").is_file()  # every trained model gets its card
    bad = bash("scripts/train_model.sh", "train.no_such_key=1")
    assert bad.returncode == 2 and "unknown key train.no_such_key" in bad.stderr


def _requirement_names(lines):
    return {re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0].lower()
            for line in lines if line.strip() and not line.lstrip().startswith("#")}


def test_requirements_and_conda_mirror_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += [d for d in extra if not d.startswith("lightbrain")]
    requirements = _requirement_names((REPO / "requirements.txt").read_text().splitlines())
    assert _requirement_names(wanted) <= requirements
    assert requirements <= _requirement_names(wanted)  # nothing pyproject does not list either

    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    torch_pin = re.search(r'TORCH_SPEC=\$\{TORCH_SPEC:-([^}]+)\}', (REPO / "scripts/setup_env.sh").read_text())[1]
    assert torch_pin in pip and "-e .[dev]" in pip  # the same pinned torch as scripts/setup_env.sh
    assert "setup()" in (REPO / "setup.py").read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_targets_call_the_scripts():
    expected = {"setup": "scripts/setup_env.sh", "quickstart": "scripts/quickstart.sh",
                "test": "scripts/run_tests.sh", "prepare": "scripts/prepare_data.sh --source \"../shared/data\"",
                "train": "scripts/train_model.sh -c \"configs/tiny_cpu.yaml\"",
                "generate": f"scripts/generate_text.sh --checkpoint \"models/lightbrain_tiny_v1.0.pt\" -p \"{PROMPTS[0]}\"",
                "plot": "lightbrain plot attention"}
    for target, command in expected.items():
        r = subprocess.run(["make", "-n", target, "SOURCE=../shared/data"], capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 0, r.stderr
        assert command in r.stdout, (target, r.stdout)
    r = subprocess.run(["make", "-n", "quickstart", "SOURCE=../shared/data", "MINUTES=3"], capture_output=True,
                       text=True, cwd=REPO)
    assert 'SOURCE="../shared/data"' in r.stdout and 'MINUTES="3"' in r.stdout


def test_speedrun_experiment_trains_a_fixed_number_of_steps(tiny_data, tmp_path):
    # --steps drops the time budget, so the run (and its schedule) ends on the step count alone
    runs = tmp_path / "runs"
    cmd = [sys.executable, REPO / "bench/speedrun_experiment.py", "fixed", "--steps", "3", "-c",
           REPO / "configs/test_tiny.yaml", "--runs", runs, f"train.data_dir={tiny_data}"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    row = json.loads((runs / "experiments.jsonl").read_text().splitlines()[-1])
    assert row["name"] == "fixed" and row["iters"] == 3 and row["budget"] == "3 steps"
    assert row["val_bpb"] > 0 and (runs / "fixed/logs").is_dir()
    bad = subprocess.run(cmd[:3] + ["--steps", "0"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and "--steps must be at least 1" in bad.stderr
