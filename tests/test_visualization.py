import json

import matplotlib.image
import pytest
import torch

from lightbrain.cli import main
from lightbrain.config import LightBrainConfig, ModelConfig
from lightbrain.models.lightbrain_tiny import LightBrainTiny
from lightbrain.training.checkpoint import save_checkpoint
from lightbrain.visualization import (MetricsError, attention_maps, draw_attention, draw_training_curves,
                                      plot_training_curves, read_metrics, token_labels)


def _write_metrics(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line if isinstance(line, str) else json.dumps(line) + "\n" for line in lines))
    return path


RUN = [
    {"kind": "eval", "iter": 0, "train_loss": 10.9, "val_loss": 10.95, "val_bpb": 3.5, "lr": 1e-5},
    {"kind": "train", "iter": 1, "loss": 10.8, "lr": 1e-4, "tokens_per_sec": 900.0, "elapsed_s": 1.0},
    {"kind": "train", "iter": 10, "loss": 7.0, "lr": 6e-4, "tokens_per_sec": 900.0, "elapsed_s": 9.0},
    {"kind": "eval", "iter": 10, "train_loss": 6.9, "val_loss": 7.2, "val_bpb": 2.4, "lr": 6e-4},
    # a resumed run logged step 20 again: the later record wins
    {"kind": "train", "iter": 20, "loss": 9.9, "lr": 3e-4, "tokens_per_sec": 900.0, "elapsed_s": 18.0},
    {"kind": "train", "iter": 20, "loss": 5.5, "lr": 3e-4, "tokens_per_sec": 900.0, "elapsed_s": 18.0},
    {"kind": "eval", "iter": 20, "train_loss": 5.4, "val_loss": 6.1, "val_bpb": 2.0, "lr": 6e-5},
    '{"kind": "train", "iter": 21, "lo',  # cut short by a kill mid-write
]


def test_read_metrics_resolves_repeats_and_a_cut_last_line(tmp_path):
    metrics = read_metrics(_write_metrics(tmp_path / "logs" / "metrics.jsonl", RUN).parent)
    assert [r["iter"] for r in metrics["train"]] == [1, 10, 20]
    assert metrics["train"][-1]["loss"] == 5.5
    assert [r["val_loss"] for r in metrics["eval"]] == [10.95, 7.2, 6.1]


def test_read_metrics_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(MetricsError, match="no training metrics at .*metrics.jsonl"):
        read_metrics(tmp_path)
    bad = _write_metrics(tmp_path / "m.jsonl", [RUN[0], "not json\n", RUN[1]])
    with pytest.raises(MetricsError, match="line 2 is not valid JSON"):
        read_metrics(bad)
    with pytest.raises(MetricsError, match="line 1 is not a train/eval record"):
        read_metrics(_write_metrics(tmp_path / "n.jsonl", [{"iter": 3}]))
    with pytest.raises(MetricsError, match="no train or eval records"):
        read_metrics(_write_metrics(tmp_path / "e.jsonl", ["\n"]))


def test_training_curves_show_losses_and_learning_rate(tmp_path):
    metrics = read_metrics(_write_metrics(tmp_path / "metrics.jsonl", RUN))
    fig = draw_training_curves(metrics)
    loss_ax, lr_ax = fig.axes
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    assert list(lines["train loss (per step)"].get_xdata()) == [1, 10, 20]
    assert list(lines["train loss (per step)"].get_ydata()) == [10.8, 7.0, 5.5]
    val = next(line for label, line in lines.items() if label.startswith("validation loss"))
    assert list(val.get_ydata()) == [10.95, 7.2, 6.1]
    assert "best 6.100 at step 20, 2.000 bits/byte" in val.get_label()
    assert list(lr_ax.get_lines()[0].get_ydata()) == [1e-4, 6e-4, 3e-4]  # the steps' own rates
    assert "loss" in loss_ax.get_ylabel() and lr_ax.get_ylabel() == "learning rate"
    assert "step" in lr_ax.get_xlabel()

    out = plot_training_curves(tmp_path / "metrics.jsonl")
    assert out == tmp_path / "training_curves.png"
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 400 and image.shape[1] > 500
    assert image[..., :3].std() > 0.05  # something is drawn, not a blank canvas


def _tiny_model(**options):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0, **options)
    return LightBrainTiny(config).eval()


@pytest.mark.parametrize("options", [{}, {"positional": "rope", "qk_norm": True, "norm": "rmsnorm"},
                                     {"positional": "rope", "document_mask": True, "eot_id": 3}])
def test_attention_maps_are_what_the_model_computes(options):
    model = _tiny_model(**options)
    idx = torch.randint(4, 64, (11,))
    idx[4] = 3  # an end-of-text token: with a document mask, the tokens from it on cannot see those before it
    maps = attention_maps(model, idx)
    assert maps.shape == (2, 2, 11, 11)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 11))
    assert torch.all(maps.triu(diagonal=1) == 0)  # causal: no weight on later tokens
    assert torch.all(maps[:, :, 4:, :4] == 0) == bool(options.get("document_mask"))

    # Rebuild each layer's output from the maps and its values; it must equal the fused SDPA result.
    seen = {}
    hooks = [b.attn.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(i, (args[0], out)))
             for i, b in enumerate(model.transformer.h)]
    with torch.no_grad():
        model(idx[None])
    for h in hooks:
        h.remove()
    for layer, block in enumerate(model.transformer.h):
        x, out = seen[layer]
        attn = block.attn
        v = attn.c_attn(x).split(attn.n_embd, dim=2)[2].view(1, 11, 2, 8).transpose(1, 2)
        y = (maps[layer][None] @ v).transpose(1, 2).reshape(1, 11, 16)
        torch.testing.assert_close(attn.c_proj(y), out, atol=1e-5, rtol=1e-4)


def test_draw_attention_grid_and_labels():
    weights = torch.rand(3, 2, 4, 4).tril().softmax(-1)
    fig = draw_attention(weights, ["The", "·patient", "·has", "·fever"], layers=[2], heads=[0, 1])
    panels = [ax for ax in fig.axes if ax.get_title().startswith("layer")]
    assert [ax.get_title() for ax in panels] == ["layer 2, head 0", "layer 2, head 1"]
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["The", "·patient", "·has", "·fever"]
    assert [t.get_text() for t in panels[1].get_xticklabels()] == ["The", "·patient", "·has", "·fever"]
    assert "key" in panels[0].get_xlabel() and "query" in panels[0].get_ylabel()
    with pytest.raises(ValueError, match="layer 3 does not exist: the model has 3 layers"):
        draw_attention(weights, ["a", "b", "c", "d"], layers=[3])


def test_token_labels_show_spaces_and_end_of_text(tiny_tokenizer):
    ids = tiny_tokenizer.encode("The patient") + [tiny_tokenizer.eot_id]
    labels = token_labels(tiny_tokenizer, ids)
    assert labels[-1] == "<eot>"
    assert "".join(labels[:-1]).replace("·", " ") == "The patient"


@pytest.fixture
def checkpoint(tmp_path, tiny_tokenizer):
    model = LightBrainTiny(ModelConfig(vocab_size=tiny_tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2,
                                       n_embd=16, dropout=0.0))
    config = LightBrainConfig(model=model.config)
    return save_checkpoint(tmp_path / "model.pt", model=model, config=config, tokenizer=tiny_tokenizer.to_dict())


def test_plot_cli_writes_both_pictures(tmp_path, checkpoint, capsys):
    _write_metrics(tmp_path / "logs" / "metrics.jsonl", RUN)
    assert main(["plot", "loss", "--log-dir", str(tmp_path / "logs"), "-o", str(tmp_path / "curves.png")]) == 0
    assert main(["plot", "attention", "--checkpoint", str(checkpoint), "-p", "The patient has a fever.",
                 "--layer", "1", "-o", str(tmp_path / "attn.png")]) == 0
    for name in ("curves.png", "attn.png"):
        image = matplotlib.image.imread(tmp_path / name)
        assert image.ndim == 3 and image[..., :3].std() > 0.05
    assert f"wrote {tmp_path / 'attn.png'}" in capsys.readouterr().out


def test_plot_cli_errors_are_messages(tmp_path, checkpoint, capsys):
    assert main(["plot", "loss", "--log-dir", str(tmp_path)]) == 1
    assert "no training metrics" in capsys.readouterr().err
    assert main(["plot", "attention", "--checkpoint", str(checkpoint), "--layer", "5",
                 "-o", str(tmp_path / "a.png")]) == 1
    assert "layer 5 does not exist" in capsys.readouterr().err
    assert main(["plot", "attention", "--checkpoint", str(checkpoint), "-p", "fever " * 40,
                 "-o", str(tmp_path / "a.png")]) == 1
    assert "longer than the model's context of 32" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists()


def test_plot_attention_takes_device_auto(tmp_path, checkpoint):
    """The prompt goes where load_model put the model: with --device auto the raw "auto" once reached
    torch.tensor and failed."""
    assert main(["plot", "attention", "--checkpoint", str(checkpoint), "-p", "The patient has a fever.",
                 "--device", "auto", "-o", str(tmp_path / "attn.png")]) == 0
    assert (tmp_path / "attn.png").stat().st_size > 0
