"""Fine-tuning: instruction examples and their masks, LoRA and full fine-tuning, adapters, merging, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lightbrain.cli import main
from lightbrain.config import ConfigError, LightBrainConfig, ModelConfig
from lightbrain.data.instructions import (InstructionExample, encode_example, load_examples, make_batch,
                                          medquad_examples, pubmedqa_examples)
from lightbrain.data.sources import DataError, Document, pubmedqa_test_pmids
from lightbrain.data.split import split_of
from lightbrain.evaluation.prompts import question_segments
from lightbrain.models.lightbrain_tiny import LightBrainTiny
from lightbrain.training.checkpoint import load_checkpoint, load_model, save_checkpoint
from lightbrain.training.finetune import (FinetuneConfig, FinetuneError, apply_lora, finetune, load_finetune_config,
                                          load_with_adapter, merge_adapter)

REPO = Path(__file__).resolve().parents[1]
DECISIONS = ["yes", "no", "maybe"]


# --- tiny data written here --------------------------------------------------------------------


def _pubmedqa(folder: Path, n_items: int = 12, n_test: int = 6) -> None:
    folder.mkdir(parents=True)
    items = {}
    for i in range(n_items):
        decision = DECISIONS[i % 3]
        items[str(1000 + i)] = {
            "QUESTION": f"Does treatment {i} reduce fever in children?",
            "CONTEXTS": [f"We followed {20 + i} children with fever for two weeks.",
                         f"Fever fell in {i} of them after the treatment; the rest were unchanged."],
            "LABELS": ["METHODS", "RESULTS"], "MESHES": ["Fever"], "YEAR": "2001",
            "final_decision": decision, "LONG_ANSWER": f"Treatment {i} {'reduced' if decision == 'yes' else 'did not clearly reduce'} fever.",
        }
    (folder / "ori_pqal.json").write_text(json.dumps(items), encoding="utf-8")
    test = {pmid: items[pmid]["final_decision"] for pmid in list(items)[:n_test]}
    (folder / "test_ground_truth.json").write_text(json.dumps(test), encoding="utf-8")


def _medquad(folder: Path, n_files: int = 8) -> None:
    sub = folder / "1_Test_QA"
    sub.mkdir(parents=True)
    for f in range(n_files):
        pairs = "".join(
            f'<QAPair pid="{p}"><Question qid="q{f}-{p}">What is condition {f}-{p} ?</Question>'
            f"<Answer>Condition {f}-{p} is a rare disorder.    - It causes fever.\n\n  Treatment is rest.</Answer></QAPair>"
            for p in range(2))
        pairs += '<QAPair pid="9"><Question qid="x">Who treats it?</Question><Answer></Answer></QAPair>'  # unanswered
        (sub / f"{f:07d}.xml").write_text(f'<Document id="{f}"><Focus>c</Focus><QAPairs>{pairs}</QAPairs></Document>',
                                          encoding="utf-8")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ft_sources")
    _pubmedqa(root / "pubmedqa")
    _medquad(root / "medquad")
    return root


def _tiny_model(vocab_size: int, seed: int = 0, block_size: int = 64) -> LightBrainTiny:
    torch.manual_seed(seed)
    return LightBrainTiny(ModelConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32,
                                      dropout=0.0))


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory, tiny_tokenizer) -> Path:
    model = _tiny_model(tiny_tokenizer.vocab_size)
    config = LightBrainConfig(model=model.config)
    config.data.validation_one_in = 2  # so that some tiny MedQuAD files are held out
    path = tmp_path_factory.mktemp("ft_base") / "base.pt"
    return save_checkpoint(path, model=model, config=config, tokenizer=tiny_tokenizer.to_dict(), iter_num=7)


def _config(base: Path, sources: Path, out: Path, **kw) -> FinetuneConfig:
    settings = dict(checkpoint=str(base), source=str(sources), out_dir=str(out), max_iters=4, batch_size=4,
                    lora_dropout=0.0, progress=False, learning_rate=1e-2)
    settings.update(kw)
    return FinetuneConfig(**settings)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, base_ckpt, sources) -> Path:
    out = tmp_path_factory.mktemp("ft_lora")
    finetune(_config(base_ckpt, sources, out))
    return out


# --- examples ----------------------------------------------------------------------------------


def test_pubmedqa_examples_leave_out_the_test_split(sources):
    examples = pubmedqa_examples(sources)
    test = pubmedqa_test_pmids(sources / "pubmedqa")
    assert len(test) == 6
    assert {e.key for e in examples} == {str(1000 + i) for i in range(6, 12)}
    assert sorted(e.task for e in examples) == ["conclusion"] * 6 + ["decision"] * 6
    decision = next(e for e in examples if e.task == "decision" and e.key == "1007")
    assert decision.prompt.endswith("\nQuestion: Does treatment 7 reduce fever in children?\nAnswer:")
    assert decision.prompt.startswith("METHODS: We followed 27 children")
    assert decision.completion == " " + DECISIONS[7 % 3]
    conclusion = next(e for e in examples if e.task == "conclusion" and e.key == "1007")
    assert conclusion.prompt.endswith("CONCLUSIONS:") and conclusion.completion.startswith(" Treatment 7")
    assert [e.task for e in pubmedqa_examples(sources, ["decision"])] == ["decision"] * 6


def test_medquad_examples_follow_the_pretraining_split(sources):
    split = medquad_examples(sources, validation_one_in=2)
    for name, examples in split.items():
        for e in examples:
            rel = e.key.split("#")[0]
            assert split_of(Document("", group=rel), 2) == name
    assert split["train"] and split["validation"]  # both sides non-empty with 1 in 2 held out
    assert len(split["train"]) + len(split["validation"]) == 16  # 8 files x 2 answered pairs; empty answers dropped
    e = split["train"][0]
    assert e.segments == question_segments(e.prompt[len("Question: "):-len("\nAnswer:")])
    assert e.completion.startswith(" Condition ") and "\n- It causes fever.\n\nTreatment is rest." in e.completion


def test_load_examples_limit_and_held_out(sources):
    both = load_examples("both", sources, 2)
    assert {e.source for e in both["train"]} == {"pubmedqa", "medquad"}
    assert all(e.source == "medquad" for e in both["validation"])
    held = {e.key for e in both["validation"]}
    assert not held & {e.key for e in both["train"]}
    limited = load_examples("both", sources, 2, limit=3, seed=1)
    assert [e.source for e in limited["train"]].count("pubmedqa") == 3
    assert load_examples("both", sources, 2, limit=3, seed=1)["train"] == limited["train"]  # seeded


def test_real_data_never_trains_on_pubmedqa_test_items(shared_data):
    examples = pubmedqa_examples(shared_data)
    test = pubmedqa_test_pmids(shared_data)
    keys = {e.key for e in examples}
    assert len(test) == 500 and len(keys) == 500 and not keys & test
    assert {e.completion for e in examples if e.task == "decision"} == {" yes", " no", " maybe"}
    # MedQuAD: a numbered subfolder keeps its files' paths, so their pretraining split
    cdc = medquad_examples(shared_data / "medquad" / "9_CDC_QA", validation_one_in=20)
    assert cdc["train"]
    for name, part in cdc.items():
        assert all(split_of(Document("", group=e.key.split("#")[0]), 20) == name for e in part)
        assert all(e.key.startswith("9_CDC_QA/") for e in part)


# --- token rows and the answer-only loss --------------------------------------------------------


def _example(question="Does rest help?", answer=" Rest helped most patients.", context="RESULTS: fever fell."):
    return InstructionExample("pubmedqa", "decision", "1", [("context", context), ("fixed", "\nQuestion:"),
                                                             ("question", " " + question), ("fixed", "\nAnswer:")],
                              answer)


def test_targets_mask_prompt_tokens_and_padding(tiny_tokenizer):
    short, longer = _example(), _example(answer=" Rest helped most patients with fever and cough.")
    rows = [encode_example(tiny_tokenizer, e, 128) for e in (short, longer)]
    for row, e in zip(rows, (short, longer)):
        assert not row.truncated
        assert row.ids[0] == tiny_tokenizer.eot_id and row.ids[-1] == tiny_tokenizer.eot_id
        assert tiny_tokenizer.decode(row.ids[1:row.prompt_len]) == e.prompt
    x, y = make_batch(rows, tiny_tokenizer.eot_id)
    for b, row in enumerate(rows):
        answer = row.ids[row.prompt_len:]
        kept = y[b][y[b] >= 0].tolist()
        assert kept == answer  # exactly the answer and its end-of-text token
        assert (y[b, :row.prompt_len - 1] == -1).all()  # no loss on the prompt
        assert x[b, :len(row.ids) - 1].tolist() == row.ids[:-1]
    assert (y[0, len(rows[0].ids) - 1:] == -1).all() and (x[0, len(rows[0].ids) - 1:] == tiny_tokenizer.eot_id).all()

    model = _tiny_model(tiny_tokenizer.vocab_size, block_size=128).eval()
    logits, loss = model(x, y)
    mask = y >= 0
    manual = F.cross_entropy(logits[mask], y[mask])
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    y_all = x.roll(-1, dims=1)  # targets on every position give another loss: the mask matters
    assert model(x, y_all)[1].item() != pytest.approx(loss.item(), rel=1e-3)


def test_long_examples_keep_the_answer_start(tiny_tokenizer):
    context = "RESULTS: " + " ".join(f"Cohort {i} had fever." for i in range(60))
    answer = " " + " ".join(f"Patients in group {i} improved." for i in range(40))
    row = encode_example(tiny_tokenizer, _example(answer=answer, context=context), 128)
    assert row.truncated and len(row.ids) == 129
    assert row.prompt_len == 129 // 2  # the prompt keeps half the row, cut in the middle of its context
    prompt = tiny_tokenizer.decode(row.ids[1:row.prompt_len])
    assert "[...]" in prompt and prompt.endswith("\nQuestion: Does rest help?\nAnswer:")
    assert row.ids[row.prompt_len:] == tiny_tokenizer.encode(answer)[:129 - row.prompt_len]

    # a long context with a short answer: the answer is whole, the prompt takes the rest
    row = encode_example(tiny_tokenizer, _example(context=context), 128)
    assert row.truncated and len(row.ids) == 129
    assert row.ids[row.prompt_len:] == tiny_tokenizer.encode(" Rest helped most patients.") + [tiny_tokenizer.eot_id]


# --- LoRA, merging, full fine-tuning ------------------------------------------------------------


def test_apply_lora_leaves_only_adapters_trainable(tiny_tokenizer):
    model = _tiny_model(tiny_tokenizer.vocab_size)
    peft_model = apply_lora(model, rank=4, alpha=8)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert adapted == {"c_attn", "c_proj", "c_fc"}
    assert len(trainable) == 2 * 4 * 2  # 2 layers x 4 Linear layers x (A, B)
    with pytest.raises(ConfigError, match="no Linear layer named q_proj"):
        apply_lora(_tiny_model(tiny_tokenizer.vocab_size), target_modules=["q_proj"])


def test_lora_changes_only_adapted_weights(lora_run, base_ckpt):
    summary = json.loads((lora_run / "finetune.json").read_text())
    assert summary["method"] == "lora" and summary["iters"] == 4
    assert summary["examples"] == {"pubmedqa/decision": 6, "pubmedqa/conclusion": 6,
                                   "medquad/answer": summary["examples"]["medquad/answer"]}
    from safetensors.torch import load_file

    adapter = load_file(lora_run / "adapter" / "adapter_model.safetensors")
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    assert all(v.abs().sum() > 0 for k, v in adapter.items() if ".lora_B." in k)  # B starts at zero: it trained
    base = load_checkpoint(base_ckpt)["model"]
    merged = load_checkpoint(lora_run / "model.pt")["model"]
    assert merged.keys() == base.keys()
    for name in base:
        adapted = name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        assert torch.equal(base[name], merged[name]) != adapted, name  # everything else kept bit for bit


def test_merged_checkpoint_matches_base_plus_adapter(lora_run, base_ckpt, tmp_path, tiny_tokenizer):
    on_top, tokenizer, _ = load_with_adapter(base_ckpt, lora_run / "adapter")
    merged, _, ckpt = load_model(lora_run / "model.pt")
    assert ckpt["iter_num"] == 7 and ckpt["metrics"]["finetune"]["method"] == "lora"
    x = torch.tensor([[tokenizer.eot_id] + tokenizer.encode("Question: What is fever?\nAnswer: It is")])
    with torch.no_grad():
        a, b = on_top(x)[0], merged(x)[0]
        base_logits = load_model(base_ckpt)[0](x)[0]
    assert (a - b).abs().max().item() < 1e-5
    assert (a - base_logits).abs().max().item() > 1e-4  # and the adapter does change the output
    again = merge_adapter(base_ckpt, lora_run / "adapter", tmp_path / "merged.pt")
    for name, value in load_checkpoint(again)["model"].items():
        assert torch.allclose(value, ckpt["model"][name], atol=1e-6), name


def test_full_finetune_changes_every_weight(tmp_path, base_ckpt, sources):
    summary = finetune(_config(base_ckpt, sources, tmp_path, method="full", max_iters=3, learning_rate=1e-3))
    assert not (tmp_path / "adapter").exists() and "adapter" not in summary
    assert summary["trainable_parameters"] == load_model(base_ckpt)[0].get_num_params()
    base = load_checkpoint(base_ckpt)["model"]
    tuned = load_checkpoint(tmp_path / "model.pt")["model"]
    unchanged = [n for n in base if torch.equal(base[n], tuned[n])]
    assert unchanged == []
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [1, 3] and all(r["kind"] == "train" for r in records)
    # the gradient norm before clipping, as the trainer logs it (grad_clip is on by default)
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in records)


# --- the command line ---------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path, base_ckpt, sources, capsys):
    out = tmp_path / "run"
    args = ["finetune", "--checkpoint", str(base_ckpt), "--data", "both", "--source", str(sources), "--method", "lora",
            "--rank", "4", "--alpha", "8", "--max-iters", "2", "--batch-size", "4", "--out", str(out),
            "--eval-pubmedqa", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "research and education only" in printed
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["pubmedqa_before"]["n_items"] == 6 and 0 <= summary["pubmedqa_after"]["accuracy"] <= 1
    assert summary["settings"]["rank"] == 4 and summary["held_out_loss_after"] is not None
    info = json.loads((out / "adapter" / "lightbrain_adapter.json").read_text())
    assert info["rank"] == 4 and info["alpha"] == 8 and info["base_checkpoint"] == str(base_ckpt)

    assert main(args) == 1  # an earlier run's outputs are not replaced silently
    assert "--force" in capsys.readouterr().err

    merged = tmp_path / "merged.pt"
    assert main(["finetune", "merge", "--base", str(base_ckpt), "--adapter", str(out / "adapter"),
                 "--out", str(merged)]) == 0
    assert main(["generate", "--checkpoint", str(merged), "-p", "Question: What is fever?\nAnswer:", "-n", "3",
                 "--seed", "0", "--no-stream"]) == 0
    assert capsys.readouterr().out.count("Question: What is fever?") == 1


def test_recipe_and_flags(tmp_path):
    config = load_finetune_config(REPO / "configs" / "finetune_lora.yaml", rank=4, device=None)
    assert config.method == "lora" and config.rank == 4 and config.alpha == 16 and config.target_modules
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  rnak: 4\n")
    with pytest.raises(ConfigError, match="did you mean 'rank'"):
        load_finetune_config(bad)
    with pytest.raises(ConfigError, match="finetune.method must be one of lora, full"):
        load_finetune_config(method="qlora")
    assert main(["finetune", "-c", str(bad)]) == 2


def test_errors_are_for_users(tmp_path, base_ckpt, sources, lora_run, capsys):
    assert main(["finetune", "--checkpoint", str(tmp_path / "none.pt"), "--source", str(sources),
                 "--out", str(tmp_path / "o")]) == 1
    assert "base checkpoint not found" in capsys.readouterr().err

    empty = tmp_path / "empty"
    (empty / "pubmedqa").mkdir(parents=True)
    with pytest.raises(DataError, match="no PubMedQA files"):
        load_examples("pubmedqa", empty, 20)
    no_test = tmp_path / "no_test"
    _pubmedqa(no_test / "pubmedqa")
    (no_test / "pubmedqa" / "test_ground_truth.json").unlink()
    with pytest.raises(DataError, match="test_ground_truth.json"):  # test items cannot be told apart
        load_examples("pubmedqa", no_test, 20)
    all_test = tmp_path / "all_test"
    _pubmedqa(all_test / "pubmedqa", n_items=3, n_test=3)
    with pytest.raises(DataError, match="no fine-tuning examples"):
        load_examples("pubmedqa", all_test, 20)
    with pytest.raises(DataError, match="not found"):
        load_examples("both", tmp_path / "missing", 20)

    other_base = tmp_path / "other.pt"
    model, tokenizer, ckpt = load_model(base_ckpt)
    with torch.no_grad():
        model.transformer.ln_f.weight.add_(1.0)
    save_checkpoint(other_base, model=model, config=LightBrainConfig(model=model.config), tokenizer=ckpt["tokenizer"])
    with pytest.raises(FinetuneError, match="other base weights"):
        merge_adapter(other_base, lora_run / "adapter", tmp_path / "m.pt")
    with pytest.raises(FinetuneError, match="not a LightBrain adapter folder"):
        merge_adapter(base_ckpt, sources, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
