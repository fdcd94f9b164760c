"""The walk-through notebook runs top to bottom (toy sizes, offline, on ../shared/data), so it cannot rot."""

import re

import pytest

from lightbrain import DISCLAIMER

from conftest import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
kernelspec = pytest.importorskip("ipykernel.kernelspec")

NOTEBOOK = REPO / "notebooks" / "LightBrain_Tiny_v1.0_Scratch.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])  # the data path and TINY switch come first


def test_notebook_runs_every_stage(shared_data, tiktoken_cache, tmp_path, monkeypatch):
    # A kernel of this very interpreter, whatever other kernels the machine has.
    kernelspec.write_kernel_spec(tmp_path / "jupyter" / "kernels" / "lightbrain-test")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("LIGHTBRAIN_TINY", "1")
    monkeypatch.setenv("LIGHTBRAIN_DATA", str(shared_data))
    monkeypatch.setenv("LIGHTBRAIN_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="lightbrain-test",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert DISCLAIMER in text
    assert "total (tied head)       29,995,392" in text  # the seed model's parameter accounting
    assert "same as model(idx): True" in text  # the components by hand equal the model's forward
    bpb = {name: float(v) for name, v in re.findall(r"(untrained|trained): loss [\d.]+, perplexity [\d,.]+, "
                                                     r"([\d.]+) bits/byte", text)}
    assert bpb["trained"] < bpb["untrained"]  # the short run learned something
    assert "The patient presented with symptoms of fever and cough." in text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the live loss plot and the attention maps

    out = tmp_path / "out"
    for path in ("data/meta.json", "data/tokenizer.json", "models/lightbrain_tiny_v1.0.pt", "models/MODEL_CARD.md",
                 "logs/metrics.jsonl", "attention.png"):
        assert (out / path).is_file(), path
