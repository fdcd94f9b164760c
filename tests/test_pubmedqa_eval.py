"""PubMedQA accuracy / macro-F1, long-answer ROUGE, prompts and reports."""

from __future__ import annotations

import json

import pytest
import torch

from lightbrain import DISCLAIMER
from lightbrain.config import ModelConfig
from lightbrain.data.sources import PubMedQAItem
from lightbrain.data.tokenizers import train_medical_bpe
from lightbrain.evaluation import medical_tasks as mt
from lightbrain.evaluation.prompts import (CUT_MARK, answer_text, conclusion_example, decision_example,
                                           encode_conclusion_prompt, encode_decision_prompt)
from lightbrain.models.lightbrain_tiny import LightBrainTiny

CUES = {"yes": "The treatment clearly improved survival.", "no": "The treatment did not change survival.",
        "maybe": "The effect on survival was uncertain."}


def item(pmid: str, decision: str, context: str = "", question: str = "Does the treatment improve survival?",
         long_answer: str = "The treatment improved survival in this cohort.") -> PubMedQAItem:
    return PubMedQAItem(pmid=pmid, question=question, contexts=["Patients were followed for two years.",
                                                                 context or CUES[decision]],
                        labels=["METHODS", "RESULTS"], meshes=[], long_answer=long_answer,
                        final_decision=decision, year=None)


@pytest.fixture(scope="module")
def tokenizer():
    texts = [decision_example(item(str(i), d))[0] + answer_text(d) for i, d in enumerate(CUES)]
    texts += ["Long contexts describe cohorts, methods and results in several sentences of text."] * 3
    return train_medical_bpe(texts * 5, vocab_size=400)


def tiny_model(vocab_size: int, block_size: int = 64, seed: int = 0) -> LightBrainTiny:
    torch.manual_seed(seed)
    return LightBrainTiny(ModelConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2,
                                      n_embd=32, dropout=0.0)).eval()


# --- metrics -----------------------------------------------------------------------------------


def test_classification_metrics_known_values():
    gold = ["yes", "yes", "yes", "no", "no", "maybe"]
    pred = ["yes", "yes", "no", "no", "yes", "no"]
    m = mt.classification_metrics(gold, pred)
    assert m["accuracy"] == pytest.approx(3 / 6)
    # yes: P 2/3, R 2/3 -> F1 2/3; no: P 1/3, R 1/2 -> F1 0.4; maybe: never predicted -> 0
    assert m["per_class"]["yes"]["f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["no"]["precision"] == pytest.approx(1 / 3)
    assert m["per_class"]["no"]["f1"] == pytest.approx(0.4)
    assert m["per_class"]["maybe"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.4 + 0) / 3)
    assert m["confusion"]["maybe"]["no"] == 1 and m["confusion"]["yes"]["no"] == 1
    with pytest.raises(ValueError, match="'unsure'"):
        mt.classification_metrics(["yes"], ["unsure"])


def test_majority_baseline():
    base = mt.majority_baseline(["no", "yes", "no", "maybe"])
    assert base["answer"] == "no" and base["accuracy"] == 0.5
    assert base["macro_f1"] == pytest.approx((2 * 0.5 * 1 / 1.5) / 3)
    assert mt.majority_baseline(["maybe", "no"])["answer"] == "no"  # a tie goes to the earlier answer


def test_rouge_on_known_strings():
    r = mt.rouge_scores(["the cat sat on the mat", "alpha beta", "identical words here"],
                        ["the cat lay on the mat", "gamma delta", "identical words here"])
    first = r["per_item"][0]
    assert first["rouge1"] == pytest.approx(5 / 6) and first["rouge2"] == pytest.approx(3 / 5)
    assert first["rougeL"] == pytest.approx(5 / 6)
    assert r["per_item"][1] == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert r["per_item"][2] == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert r["rouge1"] == pytest.approx((5 / 6 + 0 + 1) / 3)


# --- prompts -----------------------------------------------------------------------------------


def test_short_prompt_is_the_full_text(tokenizer):
    it = item("1", "yes")
    prompt, completion = decision_example(it)
    assert prompt == ("METHODS: Patients were followed for two years.\nRESULTS: The treatment clearly improved "
                      "survival.\nQuestion: Does the treatment improve survival?\nAnswer:") and completion == " yes"
    encoded = encode_decision_prompt(tokenizer, it, 500)
    assert encoded.ids == [tokenizer.eot_id] + tokenizer.encode(prompt) and not encoded.truncated
    prompt, completion = conclusion_example(it)
    assert prompt.startswith("Does the treatment improve survival?\n\nMETHODS:") and prompt.endswith("\nCONCLUSIONS:")
    assert completion == " The treatment improved survival in this cohort."


@pytest.mark.parametrize("budget", [24, 64, 127])
def test_long_prompts_fit_and_keep_question_and_cue(tokenizer, budget):
    long_context = " ".join(f"Sentence {i} reports results of the cohort." for i in range(80))
    it = item("2", "no", context=long_context)
    for encode, tail in ((encode_decision_prompt, "Question: Does the treatment improve survival?\nAnswer:"),
                         (encode_conclusion_prompt, "\nCONCLUSIONS:")):
        encoded = encode(tokenizer, it, budget)
        assert len(encoded.ids) <= budget and encoded.truncated
        text = tokenizer.decode(encoded.ids)
        assert text.endswith(tail) and "Does the treatment improve survival?" in text
        if budget >= 64:
            assert CUT_MARK in text and "79 reports results of the cohort." in text  # the end is kept
    very_long_question = item("3", "no", question="Is " + "very " * 200 + "long?")
    encoded = encode_decision_prompt(tokenizer, very_long_question, 64)
    assert len(encoded.ids) <= 64 and tokenizer.decode(encoded.ids).endswith("\nAnswer:")


# --- scoring -----------------------------------------------------------------------------------


def test_continuation_logprobs_equal_full_forward(tokenizer):
    model = tiny_model(tokenizer.vocab_size)
    requests = [(tokenizer.encode("Patients were"), tokenizer.encode(" followed for two")),
                (tokenizer.encode("The treatment clearly improved survival"), tokenizer.encode(" yes")),
                (tokenizer.encode("The treatment clearly improved survival"), tokenizer.encode(" no")),
                (tokenizer.encode("Answer"), tokenizer.encode(": maybe"))]
    got = mt.continuation_logprobs(model, requests, pad_id=tokenizer.eot_id, batch_size=2)
    for (prompt, cont), value in zip(requests, got):
        full = torch.tensor([prompt + cont])
        logp = torch.log_softmax(model(full)[0][0].float(), dim=-1)
        expected = sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(cont))
        assert value == pytest.approx(expected, abs=1e-4)


def test_scorer_picks_the_answer_the_model_learned(tokenizer):
    """Teach a tiny model the decision each result sentence implies; the evaluation must then read
    the right answer off every item (and the untrained model must not score perfectly)."""
    items = [item(str(i), d) for i, d in enumerate(["yes", "no", "maybe"] * 2)]
    model = tiny_model(tokenizer.vocab_size, seed=1)
    before = mt.evaluate_pubmedqa(model, tokenizer, items, progress=False)
    prompts = [encode_decision_prompt(tokenizer, it, 63).ids for it in items[:3]]
    answers = [tokenizer.encode(answer_text(it.final_decision)) for it in items[:3]]
    assert max(map(len, answers)) > 1  # this small vocabulary splits answers: the sum covers every piece
    length = max(len(p) + len(a) for p, a in zip(prompts, answers))
    batch = torch.full((3, length), tokenizer.eot_id)
    targets = torch.full_like(batch, -1)
    for row, (p, a) in enumerate(zip(prompts, answers)):
        batch[row, :len(p) + len(a)] = torch.tensor(p + a)
        targets[row, len(p) - 1:len(p) + len(a) - 1] = torch.tensor(a)  # learn only the answer's tokens
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        _, loss = model(batch, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    after = mt.evaluate_pubmedqa(model, tokenizer, items, progress=False)
    assert [p["predicted"] for p in after["predictions"]] == [it.final_decision for it in items]
    assert after["accuracy"] == 1.0 and after["macro_f1"] == 1.0
    assert before["accuracy"] < 1.0
    for p in after["predictions"]:
        assert p["logprobs"][p["predicted"]] == max(p["logprobs"].values())


def test_evaluate_pubmedqa_refuses_unlabelled_items(tokenizer):
    unlabelled = item("9", "yes")
    unlabelled.final_decision = None
    with pytest.raises(ValueError, match="item 9"):
        mt.evaluate_pubmedqa(tiny_model(tokenizer.vocab_size), tokenizer, [unlabelled], progress=False)


def test_clean_generation_stops_at_end_of_text_and_line_break(tokenizer):
    ids = tokenizer.encode(" It helped.\nQuestion: next") + [tokenizer.eot_id] + tokenizer.encode(" more")
    assert mt._clean_generation(tokenizer, ids) == "It helped."
    assert mt._clean_generation(tokenizer, tokenizer.encode(" A") + [tokenizer.eot_id, 5]) == "A"


def test_reports(tmp_path, tokenizer):
    items = [item(str(i), d) for i, d in enumerate(["yes", "no", "maybe", "yes"])]
    model = tiny_model(tokenizer.vocab_size)
    acc = mt.evaluate_pubmedqa(model, tokenizer, items, progress=False)
    rouge = mt.evaluate_long_answer_rouge(model, tokenizer, items, limit=2, max_new_tokens=8, progress=False)
    assert rouge["n_items"] == 2 and len(rouge["examples"]) == 2
    assert rouge["method"]["prompt_budget_tokens"] == 64 - 8
    mt.write_results([acc, rouge], tmp_path / "r.json", tmp_path / "r.md")
    saved = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert saved[0]["accuracy"] == acc["accuracy"] and saved[1]["rouge1"] == rouge["rouge1"]
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert DISCLAIMER in md and "majority class" in md and "ROUGE-2" in md and "78.2%" in md
    with pytest.raises(ValueError, match="cannot report"):
        mt.write_results({"task": "other"}, None, tmp_path / "x.md")


# --- real data ---------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_real_test_split(shared_data, tmp_path):
    items = mt.load_pubmedqa_test_items(shared_data / "pubmedqa")
    assert len(items) == 500
    gold = [it.final_decision for it in items]
    base = mt.majority_baseline(gold)
    assert base["answer"] == "yes" and base["accuracy"] == pytest.approx(0.552)

    tokenizer = train_medical_bpe([decision_example(it)[0] for it in items[:40]], vocab_size=600)
    model = tiny_model(tokenizer.vocab_size, block_size=128)
    few = items[:6]
    result = mt.evaluate_pubmedqa(model, tokenizer, few, batch_size=4, progress=False)
    assert result["n_items"] == 6 and len(result["predictions"]) == 6
    assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["macro_f1"] <= 1.0
    assert {p["pmid"] for p in result["predictions"]} == {it.pmid for it in few}
    assert all(set(p["logprobs"]) == {"yes", "no", "maybe"} for p in result["predictions"])
    assert result["majority_baseline"] == mt.majority_baseline([it.final_decision for it in few])
    assert result["method"]["truncated_prompts"] >= 1  # real abstracts overflow 128 tokens

    rouge = mt.evaluate_long_answer_rouge(model, tokenizer, items, limit=3, max_new_tokens=16, progress=False)
    assert rouge["n_items"] == 3 and all(0.0 <= rouge[k] <= 1.0 for k in mt.ROUGE_TYPES)
    assert rouge["last_context_sentence_baseline"]["rouge1"] > 0.0
    mt.write_results([result, rouge], tmp_path / "r.json", tmp_path / "r.md")
    assert "majority class" in (tmp_path / "r.md").read_text(encoding="utf-8")
