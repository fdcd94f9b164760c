import json
import os
import subprocess
import sys

import pytest
import torch

from lightbrain import DISCLAIMER
from lightbrain.training.checkpoint import CheckpointError, load_checkpoint, load_model

from conftest import REPO


def cli(*args, input_text=None):
    return subprocess.run([sys.executable, "-m", "lightbrain", *map(str, args)], capture_output=True, text=True,
                          input=input_text, cwd=REPO, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2"})


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_run")
    r = cli("train", "-c", REPO / "configs/test_tiny.yaml", f"train.data_dir={tiny_data}",
            f"train.out_dir={out}/models", f"train.log_dir={out}/logs", "--max-iters", 30, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["iter_num"] == 30
    return out / "models" / "lightbrain_tiny_v1.0.pt"


def test_eval_reports_loss_perplexity_bpb_over_whole_split(trained, tiny_data, tmp_path):
    r = cli("eval", "--checkpoint", trained, "-o", tmp_path / "eval.json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    meta = json.loads((tiny_data / "meta.json").read_text())
    assert result["tokens"] == meta["splits"]["validation"]["tokens"] - 1  # every token but the first is predicted
    assert result["bytes"] == meta["splits"]["validation"]["bytes"]
    assert result["perplexity"] == pytest.approx(2.718281828 ** result["loss"], rel=1e-6)
    bits = result["loss"] * result["tokens"] / 0.6931471805599453
    assert result["bits_per_byte"] == pytest.approx(bits / result["bytes"], rel=1e-6)
    assert json.loads((tmp_path / "eval.json").read_text()) == result


def test_eval_text_file_and_bad_files(trained, tmp_path):
    good = tmp_path / "notes.txt"
    good.write_text("The patient reported chest pain.\n\nFollow-up was arranged.\n", encoding="utf-8")
    r = cli("eval", "--checkpoint", trained, "--text-file", good)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bytes"] == len("The patient reported chest pain.") + len("Follow-up was arranged.")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 fever".encode("latin-1"))
    r = cli("eval", "--checkpoint", trained, "--text-file", bad)
    assert r.returncode == 1 and "not UTF-8" in r.stderr and "offset 3" in r.stderr and "Traceback" not in r.stderr


def test_generate_prints_text_and_disclaimer(trained):
    r = cli("generate", "--checkpoint", trained, "-p", "The patient presented with", "-n", 20, "--seed", 1)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The patient presented with") and len(r.stdout) > len("The patient presented with")
    assert DISCLAIMER in r.stderr
    again = cli("generate", "--checkpoint", trained, "-p", "The patient presented with", "-n", 20, "--seed", 1)
    assert again.stdout == r.stdout  # reproducible with a seed


def test_quantize_flag_runs_a_smaller_copy_in_eval_and_generate(trained):
    full = json.loads(cli("eval", "--checkpoint", trained).stdout)
    r = cli("eval", "--checkpoint", trained, "--quantize", "int8")
    assert r.returncode == 0, r.stderr
    small = json.loads(r.stdout)
    assert small["quantize"] == "int8" and full["quantize"] == "none"
    assert small["tokens"] == full["tokens"]
    # int8 weights with bf16 activations change the score a little, not a lot
    assert small["bits_per_byte"] != full["bits_per_byte"]
    assert small["bits_per_byte"] == pytest.approx(full["bits_per_byte"], rel=0.02)
    r = cli("generate", "--checkpoint", trained, "-p", "The patient", "-n", 10, "--seed", 1, "--quantize", "bf16")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The patient") and DISCLAIMER in r.stderr
    r = cli("generate", "--checkpoint", trained, "-p", "x", "--quantize", "int4")
    assert r.returncode == 2 and "invalid choice: 'int4'" in r.stderr


def test_app_from_checkpoint_serves_the_quantized_copy(trained):
    from lightbrain.inference.quantize import Int8Linear
    from lightbrain.inference.serve import app_from_checkpoint

    app = app_from_checkpoint(trained, quantize="int8")
    assert isinstance(app.state.worker.model.lm_head, Int8Linear)
    assert isinstance(app_from_checkpoint(trained).state.worker.model.lm_head, torch.nn.Linear)


def test_generate_missing_checkpoint_is_a_clear_error(tmp_path):
    r = cli("generate", "--checkpoint", tmp_path / "nope.pt", "-p", "x")
    assert r.returncode == 1 and "checkpoint not found" in r.stderr and "Traceback" not in r.stderr


def test_truncated_checkpoint_is_a_clear_error(trained, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(trained.read_bytes()[: trained.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(broken)


def test_checkpoint_from_another_config_names_mismatches(trained, tmp_path):
    ckpt = load_checkpoint(trained)
    ckpt["config"]["model"]["n_embd"] = 64
    other = tmp_path / "other.pt"
    torch.save(ckpt, other)
    with pytest.raises(CheckpointError, match=r"shape mismatches.*transformer\.wte\.weight"):
        load_model(other)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/lightbrain_pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "lightbrain-checkpoint", "payload": Payload()}, evil)
    if os.path.exists("/tmp/lightbrain_pwned"):
        os.remove("/tmp/lightbrain_pwned")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(evil)
    assert not os.path.exists("/tmp/lightbrain_pwned")


def test_help_lists_verbs():
    r = cli("--help")
    assert r.returncode == 0
    for verb in ("train", "eval", "generate"):
        assert verb in r.stdout
    r = cli("train", "-c", REPO / "configs/tiny_cpu.yaml", "train.learnin_rate=1")
    assert r.returncode == 2 and "did you mean 'learning_rate'" in r.stderr


def test_eval_pubmedqa_task_reports_accuracy_baseline_and_bpb(tiny_data, tiny_tokenizer, shared_data, tmp_path):
    from lightbrain.models.lightbrain_tiny import LightBrainTiny
    from lightbrain.training.checkpoint import save_checkpoint

    from conftest import tiny_config

    cfg = tiny_config(tiny_data, tmp_path, max_iters=1)
    cfg.model.vocab_size, cfg.model.block_size = tiny_tokenizer.vocab_size, 128  # room for question + cue
    trained = save_checkpoint(tmp_path / "m.pt", model=LightBrainTiny(cfg.model), config=cfg,
                              tokenizer=tiny_tokenizer.to_dict())
    r = cli("eval", "--checkpoint", trained, "--task", "pubmedqa", "--pubmedqa", shared_data / "pubmedqa",
            "--limit", 12, "--markdown", tmp_path / "results.md")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["pubmedqa"]["n_items"] == 12 and 0.0 <= result["pubmedqa"]["accuracy"] <= 1.0
    assert "majority_baseline" in result["pubmedqa"] and "bits_per_byte" in result
    assert "accuracy" in (tmp_path / "results.md").read_text().lower()
    missing = cli("eval", "--checkpoint", trained, "--task", "pubmedqa")
    assert missing.returncode == 1 and "--pubmedqa DIR" in missing.stderr


def test_load_model_auto_device_follows_pick_device(trained):
    """eval, generate and serve default to --device auto: the model lands where training would put it."""
    from lightbrain.training.utils import pick_device

    model, _, _ = load_model(trained, "auto")
    assert next(model.parameters()).device.type == pick_device("auto").type
    assert not model.training


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_errors_name_the_setting(trained):
    """A device that is missing or misspelled is named with the flag or key it came from: eval's --device,
    not train.device, whose message it borrowed before."""
    from lightbrain.training.utils import pick_device

    with pytest.raises(RuntimeError, match=r"^device=cuda but CUDA is not available"):
        load_model(trained, "cuda")
    with pytest.raises(ValueError, match=r"device='gpu0' is not a device"):
        load_model(trained, "gpu0")
    with pytest.raises(RuntimeError, match=r"^train\.device=cuda:1 "):
        pick_device("cuda:1")
    with pytest.raises(ValueError, match=r"finetune\.device='tpu' is not a device"):
        pick_device("tpu", setting="finetune.device")
    assert pick_device("cpu", setting="device") == torch.device("cpu")
    if not torch.backends.mps.is_available():
        with pytest.raises(RuntimeError, match=r"^device=mps but MPS is not available"):
            pick_device("mps", setting="device")
