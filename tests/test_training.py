import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lightbrain.config import ConfigError
from lightbrain.data.loader import BatchSampler, DataTooSmallError
from lightbrain.training.checkpoint import load_checkpoint, load_model
from lightbrain.training.trainer import TrainingError, train
from lightbrain.training.utils import get_lr

from conftest import REPO, tiny_config, tiny_corpus, write_token_dir


def test_loss_falls_and_outputs_are_written(tiny_data, tmp_path):
    result = train(tiny_config(tiny_data, tmp_path, max_iters=60, eval_interval=30))
    first, last = result.history[0], [h for h in result.history if h["kind"] == "eval"][-1]
    assert last["val_loss"] < first["val_loss"] - 1.0
    assert result.stopped_by == "max_iters" and result.iter_num == 60
    best = torch.load(result.best_checkpoint, weights_only=True)  # loadable without unpickling code
    assert best["iter_num"] in (30, 60) and "optimizer" not in best
    assert "optimizer" in torch.load(result.last_checkpoint, weights_only=True)
    records = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in records} == {"train", "eval"}
    # the gradient norm before clipping (test_tiny clips at 0.5) is logged with each training record
    norms = [r["grad_norm"] for r in records if r["kind"] == "train"]
    assert norms and all(math.isfinite(n) and n > 0 for n in norms)
    assert any(n > 0.5 for n in norms), "a fresh model's first gradients should exceed the clip"
    log_text = (tmp_path / "logs" / "training.log").read_text()
    assert log_text.count("eval iter") == 3
    assert "grad norm" in log_text
    assert any((tmp_path / "logs" / "tensorboard").iterdir())


def test_an_infinite_grad_norm_is_logged_as_null(tiny_data, tmp_path, monkeypatch):
    # A float16 overflow makes the norm inf (the loss scaler then skips the step). JSON has no inf, and
    # json.dumps would write the non-standard `Infinity`, so the record holds null and the log says why.
    clip = torch.nn.utils.clip_grad_norm_

    def overflowing(params, max_norm):
        clip(params, max_norm)
        return torch.tensor(float("inf"))

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", overflowing)
    train(tiny_config(tiny_data, tmp_path, max_iters=2, eval_interval=2, eval_iters=1, log_interval=1))

    def no_constants(name):
        raise ValueError(f"not JSON: {name}")

    lines = (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=no_constants) for line in lines]
    assert [r["grad_norm"] for r in records if r["kind"] == "train"] == [None, None]
    assert "grad norm inf (a float16 overflow: the loss scaler skips this step)" in (
        tmp_path / "logs" / "training.log").read_text()


def test_resumed_run_ends_at_same_loss_as_uninterrupted(tiny_data, tmp_path):
    common = dict(max_iters=30, lr_decay_iters=30, eval_interval=10)
    # the same run, stopped at 20 steps and resumed to 30
    part = tiny_config(tiny_data, tmp_path / "resumed", **{**common, "max_iters": 20})
    part.model.dropout = 0.1  # dropout uses the RNG: resume must restore it too
    full_cfg = tiny_config(tiny_data, tmp_path / "full_dropout", **common)
    full_cfg.model.dropout = 0.1
    full = train(full_cfg)
    train(part)
    resumed_cfg = tiny_config(tiny_data, tmp_path / "resumed", **common)
    resumed_cfg.model.dropout = 0.1
    resumed = train(resumed_cfg, resume=True)
    assert resumed.iter_num == 30
    assert resumed.final_val_loss == pytest.approx(full.final_val_loss, abs=1e-6)
    a = load_checkpoint(full.last_checkpoint)["model"]
    b = load_checkpoint(resumed.last_checkpoint)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)


def test_every_evaluation_scores_the_same_windows(tiny_data, tmp_path):
    # At a learning rate too small to move the weights, every estimate sees the same model, so equal
    # estimates mean equal windows: the best checkpoint is then chosen on the same text each time.
    result = train(tiny_config(tiny_data, tmp_path, max_iters=12, eval_interval=4, eval_iters=3,
                               learning_rate=1e-12, min_lr=0, warmup_iters=0, grad_clip=0))
    assert not any("grad_norm" in h for h in result.history)  # no clip, no norm computed
    evals = [h for h in result.history if h["kind"] == "eval"]
    assert [h["iter"] for h in evals] == [0, 4, 8, 12]
    for h in evals[1:]:
        assert h["val_loss"] == pytest.approx(evals[0]["val_loss"], abs=1e-5)
        assert h["train_loss"] == pytest.approx(evals[0]["train_loss"], abs=1e-5)


def test_muon_trains_hidden_matrices_and_resumes_exactly(tiny_data, tmp_path):
    from lightbrain.models.lightbrain_tiny import LightBrainTiny
    from lightbrain.training.muon import BatchedMuon
    from lightbrain.training.trainer import build_optimizer

    common = dict(optimizer="muon", max_iters=30, lr_decay_iters=30, eval_interval=10)
    cfg = tiny_config(tiny_data, tmp_path / "full", **common)
    cfg.model.vocab_size = 300
    model = LightBrainTiny(cfg.model)
    adamw, muon = build_optimizer(model, cfg, torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    on_muon = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    on_adamw = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    # Muon takes the blocks' matrices only; embeddings, norms and biases stay with AdamW
    assert on_muon == {n for n in names.values() if n.startswith("transformer.h.") and n.endswith("weight")
                       and ("attn.c_" in n or "mlp.c_" in n)}
    assert on_adamw == set(names.values()) - on_muon
    assert isinstance(muon, BatchedMuon) and muon.param_groups[0]["ns_steps"] == 5
    # one weight_decay for both optimizers' matrices (norms never decay) until adamw_weight_decay sets AdamW's apart
    assert [g["weight_decay"] for g in adamw.param_groups] == [cfg.train.weight_decay, 0.0]
    assert {g["weight_decay"] for g in muon.param_groups} == {cfg.train.weight_decay}
    cfg.train.adamw_weight_decay = 0.0
    adamw_apart, muon_apart = build_optimizer(model, cfg, torch.device("cpu"))
    assert [g["weight_decay"] for g in adamw_apart.param_groups] == [0.0, 0.0]
    assert {g["weight_decay"] for g in muon_apart.param_groups} == {cfg.train.weight_decay} != {0.0}
    cfg.train.optimizer = "adamw"  # AdamW alone: the setting decays every matrix it updates
    assert [g["weight_decay"] for g in build_optimizer(model, cfg, torch.device("cpu"))[0].param_groups] == [0.0, 0.0]
    cfg.train.optimizer, cfg.train.adamw_weight_decay = "muon", None

    def last_muon_step(setting, value, grads):
        # the change the last of `grads` makes to one matrix, with train.<setting> = value
        torch.manual_seed(0)
        model = LightBrainTiny(cfg.model)
        default = getattr(cfg.train, setting)
        setattr(cfg.train, setting, value)
        muon = build_optimizer(model, cfg, torch.device("cpu"))[1]
        setattr(cfg.train, setting, default)
        assert muon.param_groups[0][setting.removeprefix("muon_")] == value
        weight = model.transformer.h[0].attn.c_proj.weight
        grad = torch.linspace(-1, 1, weight.numel()).reshape(weight.shape).sin()
        for i, sign in enumerate(grads):
            before = weight.detach().clone()
            # each gradient rolled by its index: collinear ones would give every momentum the same direction,
            # which orthogonalisation maps to the same update (equal up to rounding)
            weight.grad = sign * grad.roll(i, dims=0)
            muon.step()
        return weight.detach() - before

    # muon_ns_steps reaches Muon, and the number of iterations changes the update it makes
    assert not torch.allclose(last_muon_step("muon_ns_steps", 1, [1]), last_muon_step("muon_ns_steps", 5, [1]))
    # muon_momentum reaches Muon: after a reversed gradient, the first step's direction still counts with momentum
    assert not torch.allclose(last_muon_step("muon_momentum", 0.0, [1, -1]),
                              last_muon_step("muon_momentum", 0.95, [1, -1]), atol=1e-6)
    # muon_row_norm reaches Muon and changes the update's direction, not its size
    plain, normed = last_muon_step("muon_row_norm", 0.0, [1]), last_muon_step("muon_row_norm", 0.95, [1])
    assert not torch.allclose(plain, normed, atol=1e-6)
    assert normed.norm().item() == pytest.approx(plain.norm().item(), rel=0.02)

    # muon_split_qkv puts the fused query/key/value weights in a group whose matrices are three stacked
    cfg.train.muon_split_qkv = True
    model = LightBrainTiny(cfg.model)
    muon = build_optimizer(model, cfg, torch.device("cpu"))[1]
    split = [g for g in muon.param_groups if g.get("blocks", 1) == 3]
    split_names = {n for n, p in model.named_parameters() if any(p is q for q in split[0]["params"])}
    assert len(split) == 1 and split_names == {n for n in names.values() if n.endswith("attn.c_attn.weight")}
    assert not any(g["cautious"] for g in muon.param_groups)
    cfg.train.muon_cautious_decay = True  # reaches every group, the split one too
    assert all(g["cautious"] for g in build_optimizer(model, cfg, torch.device("cpu"))[1].param_groups)
    cfg.train.muon_split_qkv = cfg.train.muon_cautious_decay = False

    # muon_lr_scale sets Muon's share of the schedule at every step, AdamW keeps the schedule itself
    scaled = train(tiny_config(tiny_data, tmp_path / "scaled", **{**common, "max_iters": 3, "muon_lr_scale": 0.5}))
    state = load_checkpoint(scaled.last_checkpoint)["optimizer"]
    adamw_lr, muon_lr = state[0]["param_groups"][0]["lr"], state[1]["param_groups"][0]["lr"]
    assert adamw_lr > 0 and muon_lr == pytest.approx(0.5 * adamw_lr)

    full = train(tiny_config(tiny_data, tmp_path / "full", **common))
    evals = [h for h in full.history if h["kind"] == "eval"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.0
    train(tiny_config(tiny_data, tmp_path / "resumed", **{**common, "max_iters": 20}))
    resumed = train(tiny_config(tiny_data, tmp_path / "resumed", **common), resume=True)
    assert resumed.final_val_loss == pytest.approx(full.final_val_loss, abs=1e-6)
    a, b = load_checkpoint(full.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert len(b["optimizer"]) == 2  # both optimizers' states travel with the checkpoint
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=1e-6, rtol=0)


def test_weight_average_is_a_running_mean_then_an_ema_and_swaps_back():
    from lightbrain.training.weight_average import WeightAverage

    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    average = WeightAverage(layer, decay=0.8)
    means = []
    for value in (4.0, 8.0, 2.0, 6.0, 10.0):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update()
        means.append(average.average[0][0, 0].item())
    # the first 1 / (1 - 0.8) = 5 weights (the initial 0 and four steps) are averaged plainly, then EMA 0.8
    assert means[:4] == pytest.approx([2.0, 4.0, 3.5, 4.0])
    assert means[4] == pytest.approx(0.8 * 4.0 + 0.2 * 10.0)
    with average.swapped_in():
        assert layer.weight[0, 0].item() == pytest.approx(5.2)
    assert layer.weight[0, 0].item() == 10.0


def test_weight_average_is_evaluated_saved_and_resumed_exactly(tiny_data, tmp_path):
    from lightbrain.data.token_files import open_split
    from lightbrain.training.utils import estimate_loss

    common = dict(ema_decay=0.9, max_iters=30, lr_decay_iters=30, eval_interval=10)
    full = train(tiny_config(tiny_data, tmp_path / "full", **common))
    plain = train(tiny_config(tiny_data, tmp_path / "plain", **{**common, "ema_decay": 0.0}))
    assert full.final_val_loss != plain.final_val_loss  # the average, not the trained weights, was measured
    ckpt = load_checkpoint(full.last_checkpoint)
    trained = ckpt["weight_average"]["weights"]
    assert ckpt["weight_average"]["steps"] == 30
    # the plain run's weights are the EMA run's trained weights: the average changes nothing in training
    for a, b in zip(trained, load_model(plain.last_checkpoint)[0].parameters()):
        torch.testing.assert_close(a, b.detach(), atol=1e-6, rtol=0)
    model = load_model(full.last_checkpoint)[0]  # the saved model is the one evaluation measured
    assert any(not torch.equal(p.detach(), w) for p, w in zip(model.parameters(), trained))
    t = tiny_config(tiny_data, tmp_path / "full", **common).train
    losses = estimate_loss(model, open_split(tiny_data, "train"), open_split(tiny_data, "validation"),
                           t.eval_iters, t.batch_size, seed=t.seed)  # the windows every evaluation scores
    assert losses["val"] == pytest.approx(full.final_val_loss, abs=1e-6)

    train(tiny_config(tiny_data, tmp_path / "resumed", **{**common, "max_iters": 20}))
    resumed = train(tiny_config(tiny_data, tmp_path / "resumed", **common), resume=True)
    assert resumed.final_val_loss == pytest.approx(full.final_val_loss, abs=1e-6)
    again = load_checkpoint(resumed.last_checkpoint)
    for key in ckpt["model"]:
        torch.testing.assert_close(ckpt["model"][key], again["model"][key], atol=1e-6, rtol=0)
    for a, b in zip(trained, again["weight_average"]["weights"]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_compiled_training_matches_eager_and_saves_plain_weights(tiny_data, tmp_path):
    common = dict(max_iters=12, lr_decay_iters=12, eval_interval=12)
    eager = train(tiny_config(tiny_data, tmp_path / "eager", **common))
    compiled = train(tiny_config(tiny_data, tmp_path / "compiled", compile="true", **common))
    # the same steps, up to the compiler's reordering of float sums
    assert compiled.final_val_loss == pytest.approx(eager.final_val_loss, rel=1e-3)
    state = load_checkpoint(compiled.best_checkpoint)["model"]
    assert not any("_orig_mod" in key for key in state)  # the compile wrapper's prefix never reaches the file
    model, _, _ = load_model(compiled.best_checkpoint)
    assert type(model).__name__ == "LightBrainTiny"


def test_compile_without_a_cpu_compiler_trains_eagerly_with_a_warning(tiny_data, tmp_path, monkeypatch):
    import shutil

    from lightbrain.training import utils

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "no C++ compiler" in utils.compile_unavailable(torch.device("cpu"))
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(model) or model)
    result = train(tiny_config(tiny_data, tmp_path, compile="true", max_iters=3, eval_interval=3))
    assert result.iter_num == 3 and not compiled
    logged = (tmp_path / "logs" / "training.log").read_text()
    assert "WARNING train.compile=true ignored" in logged and "no C++ compiler" in logged


def test_time_budget_stops_early(tiny_data, tmp_path):
    result = train(tiny_config(tiny_data, tmp_path, max_iters=100000, time_budget_minutes=0.02))
    assert result.stopped_by == "time_budget" and 0 < result.iter_num < 100000
    assert load_checkpoint(result.last_checkpoint)["iter_num"] == result.iter_num


def test_progress_bar_under_a_time_budget_counts_the_clock_not_max_iters(tiny_data, tmp_path, capsys):
    train(tiny_config(tiny_data, tmp_path, max_iters=100000, time_budget_minutes=0.01), progress=True)
    shown = capsys.readouterr().err
    assert "100%" in shown and "budget left" in shown and "step=" in shown
    assert "100000" not in shown  # the step count out of max_iters would have read 0%


def test_non_finite_loss_stops_with_checkpoints_intact(tiny_data, tmp_path, monkeypatch):
    from lightbrain.models.lightbrain_tiny import LightBrainTiny

    cfg = tiny_config(tiny_data, tmp_path, max_iters=40, eval_interval=10)
    original = LightBrainTiny.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None, **kw):
        logits, loss = original(self, idx, targets, **kw)
        if self.training and targets is not None:
            calls["n"] += 1
            if calls["n"] > 15:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(LightBrainTiny, "forward", poisoned)
    with pytest.raises(TrainingError, match="loss became nan at iteration 15"):
        train(cfg)
    best = tmp_path / "models" / "lightbrain_tiny_v1.0.pt"
    last = tmp_path / "models" / "lightbrain_tiny_v1.0.last.pt"
    assert load_checkpoint(last)["iter_num"] == 10
    assert math.isfinite(load_checkpoint(best)["best_val_loss"])
    # with skipping enabled the same run finishes (the poison is only on some steps here)
    calls["n"] = -1000
    cfg2 = tiny_config(tiny_data, tmp_path / "skip", max_iters=20, eval_interval=10, skip_nonfinite=True)
    assert train(cfg2).iter_num == 20


def test_vocab_smaller_than_data_is_a_config_error(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path)
    cfg.model.vocab_size = 50
    with pytest.raises(ConfigError, match="smaller than the prepared data's vocabulary"):
        train(cfg)


def test_eot_id_comes_from_the_data_and_must_agree_with_it(tiny_data, tmp_path):
    from lightbrain.training.trainer import resolve_model_config
    meta = json.loads((tiny_data / "meta.json").read_text())
    cfg = tiny_config(tiny_data, tmp_path)
    resolve_model_config(cfg, meta)
    assert cfg.model.eot_id == meta["eot_id"]
    cfg.model.eot_id = meta["eot_id"] + 1
    with pytest.raises(ConfigError, match=f"set model.eot_id={meta['eot_id']}"):
        resolve_model_config(cfg, meta)


def test_validation_shorter_than_a_block_is_a_clear_error(tiny_tokenizer, tmp_path):
    docs = tiny_corpus(50)
    data = write_token_dir(tmp_path / "data", docs, ["Short."], tiny_tokenizer)
    with pytest.raises(DataTooSmallError, match="validation split has .* fewer than one window"):
        train(tiny_config(data, tmp_path))


def test_sampler_covers_each_window_once_per_epoch_and_shards_ranks():
    import numpy as np

    tokens = np.arange(8 * 10 + 1)
    seen = []
    for rank in range(2):
        s = BatchSampler(tokens, block_size=8, batch_size=2, seed=3, rank=rank, world_size=2)
        for _ in range(2):
            seen.extend(s.next_starts().tolist())
    assert len(seen) == len(set(seen)) == 8  # 10 windows, batches of 2x2 -> 8 used, none twice
    s = BatchSampler(tokens, 8, 2, seed=3)
    s.next_starts()
    state = s.state_dict()
    nxt = s.next_starts()
    s2 = BatchSampler(tokens, 8, 2, seed=3)
    s2.load_state_dict(state)
    assert np.array_equal(s2.next_starts(), nxt)


def test_sampler_anneal_repeats_a_stretch_each_epoch_and_resumes():
    import numpy as np

    tokens = np.arange(8 * 20 + 1)  # 20 windows of 8, no offset
    s = BatchSampler(tokens, block_size=8, batch_size=2, seed=5)
    s.next_starts()
    s.set_repeats([(0, 40, 3)])  # the first 5 windows three times each: 30 draws an epoch
    assert s.epoch == 1 and s.position == 0
    drawn = np.concatenate([s.next_starts() for _ in range(15)])
    counts = {int(v): int(n) for v, n in zip(*np.unique(drawn, return_counts=True))}
    assert counts == {start: 3 if start < 40 else 1 for start in range(0, 160, 8)}
    assert s.epoch == 1
    state = s.state_dict()
    following = [s.next_starts() for _ in range(15)]  # the next epoch is weighted too
    assert s.epoch == 2 and sum(int((b < 40).sum()) for b in following) == 15
    again = BatchSampler(tokens, 8, 2, seed=5)
    again.load_state_dict(state)
    assert again.repeats == [(0, 40, 3)]
    assert all(np.array_equal(a, b) for a, b in zip((again.next_starts() for _ in range(15)), following))


def _data_with_sources(tiny_data, tmp_path):
    """tiny_data, its train split mapped as two sources: pubmedqa (the first fifth) then medquad."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    meta = json.loads((data / "meta.json").read_text())
    train_split = meta["splits"]["train"]
    first = train_split["tokens"] // 5
    train_split["sources"] = [
        {"type": "pubmedqa", "source": 0, "documents": 1, "tokens": first, "bytes": 1, "copies": 1},
        {"type": "medquad", "source": 1, "documents": 1, "tokens": train_split["tokens"] - first, "bytes": 1,
         "copies": 1}]
    (data / "meta.json").write_text(json.dumps(meta))
    return data, first


def test_anneal_weights_sources_late_in_training_and_resumes_exactly(tiny_data, tmp_path):
    data, first = _data_with_sources(tiny_data, tmp_path)
    common = dict(max_iters=20, lr_decay_iters=20, eval_interval=5, anneal_fraction=0.4,
                  anneal_repeats="{pubmedqa: 4}")
    full = train(tiny_config(data, tmp_path / "full", **common))
    assert "iter 12: anneal begins, windows from pubmedqa x4" in (tmp_path / "full/logs/training.log").read_text()
    assert load_checkpoint(full.last_checkpoint)["sampler"]["repeats"] == [[0, first, 4]]
    # stopped before the anneal and resumed through it, or stopped inside it and resumed
    for stop in (10, 15):
        out = tmp_path / f"resumed_{stop}"
        train(tiny_config(data, out, **{**common, "max_iters": stop}))
        resumed = train(tiny_config(data, out, **common), resume=True)
        assert resumed.final_val_loss == pytest.approx(full.final_val_loss, abs=1e-6)
    # without a map of the train split by source, the anneal has nothing to weight: a clear error
    with pytest.raises(TrainingError, match=r"meta\.json does not map the train split by source"):
        train(tiny_config(tiny_data, tmp_path / "unmapped", **common))
    # a named source the data lacks (a recipe's anneal on other data) is skipped with a warning, not an error
    train(tiny_config(data, tmp_path / "partly", **{**common, "anneal_repeats": "{pubmedqa: 4, mts_dialog: 2}"}))
    log = (tmp_path / "partly/logs/training.log").read_text()
    assert "names mts_dialog, but the train split" in log and "those weights are skipped" in log
    assert "iter 12: anneal begins, windows from pubmedqa x4\n" in log
    train(tiny_config(data, tmp_path / "absent", **{**common, "anneal_repeats": "{mts_dialog: 2}"}))
    log = (tmp_path / "absent/logs/training.log").read_text()
    assert "the anneal is off" in log and "anneal begins" not in log


def test_short_windows_cut_the_same_batches_early_and_resume_exactly(tiny_data, tmp_path, monkeypatch):
    from lightbrain.models.lightbrain_tiny import LightBrainTiny

    seen = []
    forward = LightBrainTiny.forward

    def recording_forward(self, idx, *args, **kwargs):
        if self.training:
            seen.append(idx.clone())
        return forward(self, idx, *args, **kwargs)

    monkeypatch.setattr(LightBrainTiny, "forward", recording_forward)
    common = dict(max_iters=10, lr_decay_iters=10, eval_interval=5)
    train(tiny_config(tiny_data, tmp_path / "plain", **common))
    plain, seen[:] = list(seen), []
    full = train(tiny_config(tiny_data, tmp_path / "short", short_window=8, short_window_fraction=0.4, **common))
    # the first 40% of steps read each 32-token window as four of 8 tokens, then whole windows: the same tokens
    assert [tuple(x.shape) for x in seen] == [(16, 8)] * 4 + [(4, 32)] * 6
    for short, whole in zip(seen, plain):
        assert torch.equal(short.reshape(whole.shape), whole)
    log = (tmp_path / "short/logs/training.log").read_text()
    assert "iter 0: training on windows of 8 tokens until 40% of training" in log
    assert "iter 4: training on windows of 32 tokens\n" in log
    # stopped while windows are short and resumed through the switch
    out = tmp_path / "resumed"
    train(tiny_config(tiny_data, out, short_window=8, short_window_fraction=0.4, **{**common, "max_iters": 2}))
    resumed = train(tiny_config(tiny_data, out, short_window=8, short_window_fraction=0.4, **common), resume=True)
    assert resumed.final_val_loss == pytest.approx(full.final_val_loss, abs=1e-6)


def test_short_window_stages_lengthen_the_pieces_in_turn(tiny_data, tmp_path, monkeypatch):
    from lightbrain.models.lightbrain_tiny import LightBrainTiny

    shapes = []
    forward = LightBrainTiny.forward

    def recording_forward(self, idx, *args, **kwargs):
        if self.training:
            shapes.append(tuple(idx.shape))
        return forward(self, idx, *args, **kwargs)

    monkeypatch.setattr(LightBrainTiny, "forward", recording_forward)
    train(tiny_config(tiny_data, tmp_path, max_iters=10, lr_decay_iters=10, eval_interval=5,
                      short_window=[8, 16], short_window_fraction=[0.3, 0.6]))
    # 4 windows of 32 a step: as 16 of 8 until 30% of the steps, 8 of 16 until 60%, whole after
    assert shapes == [(16, 8)] * 3 + [(8, 16)] * 3 + [(4, 32)] * 4
    log = (tmp_path / "logs" / "training.log").read_text()
    assert "iter 0: training on windows of 8 tokens until 30% of training" in log
    assert "iter 3: training on windows of 16 tokens until 60% of training" in log
    assert "iter 6: training on windows of 32 tokens\n" in log


def test_lr_schedule_warmup_cosine_floor():
    from lightbrain.config import TrainConfig

    t = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    assert get_lr(0, t) < get_lr(9, t) < 1e-3
    assert get_lr(10, t) == pytest.approx(1e-3)
    assert get_lr(60, t) == pytest.approx(5.5e-4)
    assert get_lr(110, t) == pytest.approx(1e-4) and get_lr(500, t) == pytest.approx(1e-4)
    wsd = TrainConfig(learning_rate=1e-3, min_lr=0.0, warmup_iters=0, max_iters=100, lr_schedule="wsd", decay_fraction=0.2)
    assert get_lr(79, wsd) == pytest.approx(1e-3) and get_lr(90, wsd) == pytest.approx(5e-4)


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "lightbrain", *args], capture_output=True, text=True, env=env,
                          cwd=kw.get("cwd", REPO), timeout=kw.get("timeout", 300))


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tiny_data, tmp_path):
    cmd = [sys.executable, "-m", "lightbrain", "train", "-c", str(REPO / "configs/test_tiny.yaml"),
           f"train.data_dir={tiny_data}", f"train.out_dir={tmp_path}/models", f"train.log_dir={tmp_path}/logs",
           "train.max_iters=1000000", "train.eval_interval=1000000", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "logs" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or '"kind": "train"' not in log.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["stopped_by"] == "interrupted" and summary["iter_num"] > 0
    assert load_checkpoint(tmp_path / "models" / "lightbrain_tiny_v1.0.last.pt")["iter_num"] == summary["iter_num"]


def test_ddp_two_processes_on_cpu_with_gloo(tiny_data, tmp_path):
    """torchrun with 2 gloo processes: each rank takes its own shard of every epoch and gradients are
    averaged; rank 0 writes checkpoints and logs."""
    base = ["-c", str(REPO / "configs/test_tiny.yaml"), f"train.data_dir={tiny_data}", "train.max_iters=6",
            "train.eval_interval=6", "train.gradient_accumulation_steps=2", "--no-progress"]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lightbrain",
         "train", *base, f"train.out_dir={tmp_path}/ddp/models", f"train.log_dir={tmp_path}/ddp/logs"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "ddp/models/lightbrain_tiny_v1.0.last.pt")
    assert ckpt["iter_num"] == 6
    model, _, _ = load_model(tmp_path / "ddp/models/lightbrain_tiny_v1.0.last.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    log = (tmp_path / "ddp/logs/training.log").read_text()
    assert "2 process(es)" in log
    records = [json.loads(line) for line in (tmp_path / "ddp/logs/metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]


def test_time_fraction_drives_the_decay_in_time_boxed_runs():
    from lightbrain.config import TrainConfig

    t = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=1_000_000)
    assert get_lr(20, t, time_fraction=0.5) == pytest.approx(5.5e-4)  # halfway through the budget
    assert get_lr(20, t, time_fraction=1.0) == pytest.approx(1e-4)
    assert get_lr(5, t, time_fraction=0.9) == get_lr(5, t)  # warmup is by iterations
    wsd = TrainConfig(learning_rate=1e-3, min_lr=0.0, warmup_iters=0, max_iters=10**6, lr_schedule="wsd",
                      decay_fraction=0.2)
    assert get_lr(50, wsd, time_fraction=0.7) == pytest.approx(1e-3)
    assert get_lr(50, wsd, time_fraction=0.9) == pytest.approx(5e-4)


def test_time_budget_run_decays_to_min_lr_and_resume_keeps_the_clock(tiny_data, tmp_path):
    # no warmup: on a loaded machine the 1.2 s budget may end within a warmup, which ignores the clock
    cfg = tiny_config(tiny_data, tmp_path, max_iters=100000, time_budget_minutes=0.02, warmup_iters=0,
                      log_interval=1)
    result = train(cfg)
    # when the budget is spent the schedule, following the clock, has reached its floor
    assert result.history[-1]["kind"] == "eval" and result.history[-1]["lr"] == pytest.approx(cfg.train.min_lr)
    saved = load_checkpoint(result.last_checkpoint)["train_seconds"]
    assert saved == pytest.approx(result.train_seconds)
    resumed = train(tiny_config(tiny_data, tmp_path, max_iters=100000, time_budget_minutes=0.02, warmup_iters=0),
                    resume=True)
    assert resumed.iter_num == result.iter_num and resumed.stopped_by == "time_budget"  # budget already spent


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("adjust_lr_fn", [None, "match_rms_adamw"])
def test_batched_muon_takes_the_same_steps_as_torch_muon(nesterov, adjust_lr_fn, monkeypatch):
    from lightbrain.training import muon
    from lightbrain.training.muon import BatchedMuon

    # torch.optim.Muon iterates in bf16 everywhere; ours does too wherever the CPU runs bf16 fast
    monkeypatch.setattr(muon, "cpu_bf16_is_fast", lambda: True)

    # tall, wide and square matrices, most shapes repeated as in a stack of layers, one alone
    shapes = [(48, 16), (16, 16), (40, 16), (40, 16), (16, 40), (48, 16), (16, 16), (24, 8)]
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    kwargs = dict(lr=0.02, weight_decay=0.1, momentum=0.9, nesterov=nesterov, adjust_lr_fn=adjust_lr_fn)
    batched, reference = BatchedMuon(ours, **kwargs), torch.optim.Muon(theirs, **kwargs)
    start = [p.detach().clone() for p in ours]
    for step in range(4):
        for a, b in zip(ours, theirs):
            grad = torch.randn_like(a)
            a.grad, b.grad = grad.clone(), grad.clone()
        if step == 1:  # a matrix without a gradient is left alone, as PyTorch's Muon leaves it
            ours[1].grad = theirs[1].grad = None
        batched.step()
        reference.step()
    for a, b, a0 in zip(ours, theirs, start):
        moved = (b - a0).abs().max()
        assert moved > 0.01
        # the same bf16 arithmetic; batched products may only round differently
        assert (a - b).abs().max() <= 1e-2 * moved
    # the state is torch.optim.Muon's, so either can resume the other's checkpoint
    state = batched.state_dict()
    assert state["state"].keys() == reference.state_dict()["state"].keys()
    assert all(set(s) == {"momentum_buffer"} for s in state["state"].values())
    reference.load_state_dict(state)
    for a, b in zip(ours, theirs):
        assert torch.equal(reference.state[b]["momentum_buffer"], batched.state[a]["momentum_buffer"])


def test_batched_muon_blocks_steps_each_stacked_matrix_as_its_own():
    from lightbrain.training.muon import BatchedMuon

    # a (3 x 16) x 24 fused weight in a `blocks: 3` group moves as three 16 x 24 matrices would under
    # torch.optim.Muon, each orthogonalised and its step sized on its own; a plain matrix beside it as usual
    torch.manual_seed(0)
    fused, plain = torch.nn.Parameter(torch.randn(48, 24)), torch.nn.Parameter(torch.randn(24, 24))
    parts = [torch.nn.Parameter(part.detach().clone()) for part in fused.chunk(3)]
    plain_ref, plain_start = torch.nn.Parameter(plain.detach().clone()), plain.detach().clone()
    kwargs = dict(lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    batched = BatchedMuon([{"params": [plain]}, {"params": [fused], "blocks": 3}], **kwargs)
    reference = torch.optim.Muon(parts + [plain_ref], **kwargs)
    whole = torch.optim.Muon([torch.nn.Parameter(fused.detach().clone())], **kwargs)
    start = fused.detach().clone()
    for _ in range(3):
        grad, plain_grad = torch.randn(48, 24), torch.randn(24, 24)
        fused.grad, plain.grad, plain_ref.grad = grad.clone(), plain_grad.clone(), plain_grad.clone()
        for part, g in zip(parts, grad.chunk(3)):
            part.grad = g.clone()
        whole.param_groups[0]["params"][0].grad = grad.clone()
        batched.step()
        reference.step()
        whole.step()
    moved = (torch.cat(parts) - start).abs().max()
    assert (fused - torch.cat(parts)).abs().max() <= 1e-2 * moved
    assert (plain - plain_ref).abs().max() <= 1e-2 * (plain_ref - plain_start).abs().max()
    # orthogonalising the stack as one matrix is a different update
    assert (whole.param_groups[0]["params"][0] - torch.cat(parts)).abs().max() > 0.1 * moved


def test_batched_muon_cautious_decay_shrinks_only_what_the_step_shrinks():
    from lightbrain.training.muon import BatchedMuon

    torch.manual_seed(0)
    start, grad = torch.randn(24, 16), torch.randn(24, 16)
    lr, decay = 0.02, 5.0  # a large decay, so its share of the step is plain to see

    def one_step(weight_decay, **group):
        p = torch.nn.Parameter(start.clone())
        p.grad = grad.clone()
        BatchedMuon([{"params": [p], **group}], lr=lr, weight_decay=weight_decay).step()
        return p.detach()

    undecayed = one_step(0.0)
    step = start - undecayed  # what the orthogonalised update subtracts
    agree = step * start > 0  # the step already moves these entries towards zero
    assert 0.2 < agree.float().mean() < 0.8
    torch.testing.assert_close(one_step(decay, cautious=True), undecayed - lr * decay * start * agree)
    torch.testing.assert_close(one_step(decay), undecayed - lr * decay * start)  # plain decay shrinks them all


def test_batched_muon_row_norm_evens_out_rows_and_keeps_each_matrix_norm():
    from lightbrain.training.muon import BatchedMuon

    torch.manual_seed(0)
    start = torch.randn(48, 16)
    # rows of very different sizes, so the orthogonalised update's rows differ too
    grads = [torch.randn(48, 16) * torch.linspace(0.1, 3, 48)[:, None],
             torch.randn(48, 16) * torch.linspace(3, 0.1, 48)[:, None]]

    def run(blocks, row_norm, steps=1):
        p = torch.nn.Parameter(start.clone())
        opt = BatchedMuon([{"params": [p], "blocks": blocks, "row_norm": row_norm}], lr=0.02, weight_decay=0.0,
                          adjust_lr_fn="match_rms_adamw")
        for grad in grads[:steps]:
            p.grad = grad.clone()
            opt.step()
        return start - p.detach(), opt.state[p]

    for blocks in (1, 3):
        plain, plain_state = run(blocks, 0.0)
        normed, state = run(blocks, 0.95)
        assert set(plain_state) == {"momentum_buffer"}
        assert state["row_second_moment"].shape == (48, 1) and (state["row_second_moment"] > 0).all()
        # each stacked matrix keeps the norm Muon gave it ...
        for a, b in zip(plain.chunk(blocks), normed.chunk(blocks)):
            assert b.norm().item() == pytest.approx(a.norm().item(), rel=1e-2)
        # ... and after one step (a fresh average is each row's own mean square) all its rows are one size
        for matrix in normed.chunk(blocks):
            row_norms = matrix.norm(dim=1)
            assert (row_norms.max() / row_norms.min()).item() == pytest.approx(1.0, abs=1e-3)
        assert plain.norm(dim=1).max() / plain.norm(dim=1).min() > 1.2
    # later steps divide by the average over steps, so the rows are no longer forced to one size
    two_steps = run(1, 0.5, steps=2)[0]
    assert two_steps.norm(dim=1).max() / two_steps.norm(dim=1).min() > 1.05


def test_bfloat16_on_a_cpu_without_fast_bf16_falls_back_to_float32(monkeypatch, caplog):
    # An AVX2-only CPU runs bf16 products through a plain loop (a recipe step took 32 s, 1.3 s in fp32):
    # asking for bf16 there must not silently make training tens of times slower.
    from lightbrain.training import utils

    cpu = torch.device("cpu")
    monkeypatch.setattr(utils, "cpu_bf16_is_fast", lambda: False)
    with caplog.at_level("WARNING", logger="lightbrain.train"):
        assert utils.pick_dtype("bfloat16", cpu) == torch.float32
    assert "no fast bf16" in caplog.text and "uses float32" in caplog.text
    assert utils.pick_dtype("float32", cpu) == torch.float32
    monkeypatch.setattr(utils, "cpu_bf16_is_fast", lambda: True)
    assert utils.pick_dtype("bfloat16", cpu) == torch.bfloat16
    assert utils.pick_dtype("auto", cpu) == torch.float32  # bf16 on a CPU stays opt-in


@pytest.mark.parametrize("fast", [True, False])
def test_muon_orthogonalises_in_bf16_only_where_the_cpu_runs_it_fast(monkeypatch, fast):
    from lightbrain.training import muon

    seen = []
    real = muon.orthogonalize
    monkeypatch.setattr(muon, "cpu_bf16_is_fast", lambda: fast)
    monkeypatch.setattr(muon, "orthogonalize", lambda *a, **k: seen.append(a[4]) or real(*a, **k))
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(32, 16))
    before = weight.detach().clone()
    weight.grad = torch.randn(32, 16)
    muon.BatchedMuon([weight], lr=0.02).step()
    assert seen == [torch.bfloat16 if fast else torch.float32]
    assert not torch.equal(weight.detach(), before)


def test_orthogonalize_in_float32_matches_bfloat16():
    from lightbrain.training.muon import orthogonalize

    torch.manual_seed(0)
    stack = torch.randn(2, 48, 24)
    coefficients = (3.4445, -4.7750, 2.0315)
    full = orthogonalize(stack, coefficients, steps=5, eps=1e-7, dtype=torch.float32)
    half = orthogonalize(stack, coefficients, steps=5, eps=1e-7)
    assert full.dtype == torch.float32 and half.dtype == torch.bfloat16
    assert torch.allclose(full, half.float(), atol=0.05)


def test_orthogonalize_brings_every_singular_value_near_one():
    from lightbrain.training.muon import orthogonalize

    torch.manual_seed(0)
    # matrices of very different scales in one stack: each is normalised by its own norm
    stack = torch.randn(3, 64, 32) * torch.tensor([1e-3, 1.0, 1e3]).view(3, 1, 1)
    out = orthogonalize(stack, (3.4445, -4.7750, 2.0315), steps=5, eps=1e-7)
    assert out.shape == stack.shape and out.dtype == torch.bfloat16
    singular = torch.linalg.svdvals(out.float())
    # the quintic iteration aims near one, not exactly (0.5 to 1.5 by design)
    assert singular.min() > 0.4 and singular.max() < 1.6


@pytest.mark.parametrize("recipe", ["cpu_speedrun.yaml", "cpu_speedrun_slow.yaml", "cpu_speedrun_fp32.yaml",
                                    "gpu_speedrun.yaml"])
def test_each_speedrun_recipe_trains_at_toy_size_with_its_own_options(tiny_data, tmp_path, recipe):
    # the recipe's options together (attention kind, dropout, value residual and embedding, short windows, Muon,
    # the anneal), with its shape shrunk and on the CPU: a combination that breaks fails here, not in a long run
    from lightbrain.config import load_config

    data, _ = _data_with_sources(tiny_data, tmp_path)  # the anneal draws pubmedqa and mts_dialog by name
    # short windows shrunk with the context, for the recipes that have them
    stages = load_config(REPO / "configs" / recipe).train.short_window_stages()
    short = [f"train.short_window={[8, 16][:len(stages)]}"] if stages else []
    cfg = load_config(REPO / "configs" / recipe, overrides=[
        f"train.data_dir={data}", f"train.out_dir={tmp_path / 'models'}", f"train.log_dir={tmp_path / 'logs'}",
        "train.progress=false", "train.device=cpu", "train.dtype=float32", "train.compile=false",
        "train.max_iters=4", "train.time_budget_minutes=null", "train.eval_interval=2", "train.eval_iters=1",
        "train.batch_size=2", "model.n_layer=2", "model.n_embd=32", "model.block_size=32", *short])
    result = train(cfg)
    assert result.iter_num == 4 and math.isfinite(result.final_val_loss)
    state = torch.load(result.best_checkpoint, weights_only=True)
    assert state["config"]["model"]["dropout"] == cfg.model.dropout
