"""Medical benchmarks on PubMedQA's official 500-item test split.

- `evaluate_pubmedqa`: yes / no / maybe, zero-shot. Each answer is scored by the log-likelihood
  the model gives its tokens after the decision prompt (see prompts.py); the likeliest answer is
  the prediction. Scores are summed over the answer's tokens, not averaged: the sum is
  log P(answer | prompt), so the three scores are comparable probabilities whatever their token
  counts (with GPT-2's vocabulary each answer is one token and both agree; with a small medical
  BPE " maybe" may take two, and a per-token mean would favour it, because a word's later pieces
  are easy to predict once its first piece is there). Reports accuracy and macro-F1 beside the
  majority-class baseline computed from the labels.
- `evaluate_long_answer_rouge`: greedy generation of the conclusion after the conclusion prompt,
  scored with ROUGE-1/2/L F-measure against the abstract's real conclusion (LONG_ANSWER).
- `write_results`: the result dicts as JSON and as a Markdown report.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from lightbrain import DISCLAIMER
from lightbrain.atomic_io import atomic_write_text
from lightbrain.evaluation.prompts import (ANSWERS, CONCLUSION_CUE, DECISION_CUE, answer_text,
                                          encode_conclusion_prompt, encode_decision_prompt)

# Published accuracies on the same test split, for context (reasoning-required setting).
PUBLISHED_ACCURACY = {
    "single human annotator (Jin et al., 2019)": 0.780,
    "BioGPT, 347M parameters, fine-tuned (Luo et al., 2022)": 0.782,
}


def load_pubmedqa_test_items(path: str | Path):
    """The items of PubMedQA's official test split from a local copy (folder with ori_pqal.json and
    test_ground_truth.json), in the order of the file."""
    from lightbrain.data.sources import load_pubmedqa_items, pubmedqa_test_pmids

    path = Path(path)
    pmids = pubmedqa_test_pmids(path if path.is_dir() else path.parent)
    items = [item for item in load_pubmedqa_items(path) if item.pmid in pmids]
    missing = len(pmids) - len(items)
    if missing:
        raise ValueError(f"{path}: {missing} of the {len(pmids)} test PMIDs in test_ground_truth.json have no item; "
                         "the data folder is incomplete")
    return items


# ---------------------------------------------------------------------------------------------
# classification metrics


def classification_metrics(gold: Sequence[str], predicted: Sequence[str],
                           labels: Sequence[str] = ANSWERS) -> dict[str, Any]:
    """Accuracy, macro-F1 over `labels`, per-class precision/recall/F1 and the confusion counts.

    A class that is never predicted has precision 0 (and F1 0), so always answering "yes" is not
    rewarded in the macro average.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    if not gold:
        raise ValueError("no items to score")
    confusion = {g: {p: 0 for p in labels} for g in labels}
    for g, p in zip(gold, predicted):
        if g not in confusion or p not in confusion:
            raise ValueError(f"label {g if g not in confusion else p!r} is not one of {', '.join(labels)}")
        confusion[g][p] += 1
    per_class = {}
    for label in labels:
        tp = confusion[label][label]
        support = sum(confusion[label].values())
        n_predicted = sum(confusion[g][label] for g in labels)
        precision = tp / n_predicted if n_predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support,
                            "predicted": n_predicted}
    correct = sum(confusion[label][label] for label in labels)
    return {
        "accuracy": correct / len(gold),
        "macro_f1": sum(c["f1"] for c in per_class.values()) / len(labels),
        "per_class": per_class,
        "confusion": confusion,
    }


def majority_baseline(gold: Sequence[str], labels: Sequence[str] = ANSWERS) -> dict[str, Any]:
    """Always answer the most frequent gold label (ties go to the earlier label in `labels`)."""
    counts = Counter(gold)
    answer = max(labels, key=lambda label: (counts[label], -labels.index(label)))
    metrics = classification_metrics(gold, [answer] * len(gold), labels)
    return {"answer": answer, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


# ---------------------------------------------------------------------------------------------
# scoring


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _final_hidden(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """The final-norm output (B, T, C) for every position, without the (B, T, vocab) logits:
    the output head then runs only where an answer token is scored (it is most of the cost)."""
    captured = []
    handle = model.transformer.ln_f.register_forward_hook(lambda module, args, out: captured.append(out))
    try:
        model(idx, last_only=True)
    finally:
        handle.remove()
    return captured[0]


@torch.inference_mode()
def continuation_logprobs(model: torch.nn.Module, requests: Sequence[tuple[list[int], list[int]]],
                          pad_id: int, batch_size: int = 32, progress: bool = False) -> list[float]:
    """log P(continuation | prompt), summed over the continuation's tokens, for each (prompt, continuation).

    Requests whose model input (prompt + continuation minus its last token) is the same share one
    row; for single-token answers the three answers of an item are one forward pass. Rows are
    right-padded; causal attention keeps padding from affecting the positions read.
    """
    block = model.config.block_size
    rows: dict[tuple[int, ...], int] = {}
    wanted: list[list[tuple[int, int, int]]] = []  # per row: (position, target token, request index)
    for r, (prompt, continuation) in enumerate(requests):
        if not continuation:
            raise ValueError(f"request {r} has an empty continuation")
        full = list(prompt) + list(continuation)
        if len(full) > block + 1:
            raise ValueError(f"request {r}: prompt + answer is {len(full)} tokens; the model reads {block}")
        key = tuple(full[:-1])
        if key not in rows:
            rows[key] = len(rows)
            wanted.append([])
        for j, token in enumerate(continuation):
            wanted[rows[key]].append((len(prompt) - 1 + j, token, r))
    inputs = list(rows)
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))  # similar lengths batch together
    scores = [0.0] * len(requests)
    was_training = model.training
    model.eval()
    batches = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="pubmedqa", unit="batch")
    device = _device(model)
    try:
        for start in batches:
            chunk = order[start:start + batch_size]
            length = max(len(inputs[i]) for i in chunk)
            idx = torch.full((len(chunk), length), pad_id, dtype=torch.long)
            for b, i in enumerate(chunk):
                idx[b, :len(inputs[i])] = torch.tensor(inputs[i])
            hidden = _final_hidden(model, idx.to(device))
            picks = [(b, pos, token, r) for b, i in enumerate(chunk) for pos, token, r in wanted[i]]
            rows_b = torch.tensor([p[0] for p in picks], device=device)
            positions = torch.tensor([p[1] for p in picks], device=device)
            logits = model.lm_head(hidden[rows_b, positions]).float()
            logp = torch.log_softmax(logits, dim=-1)
            targets = torch.tensor([p[2] for p in picks], device=device)
            values = logp.gather(1, targets[:, None]).squeeze(1).tolist()
            for (_, _, _, r), value in zip(picks, values):
                scores[r] += value
    finally:
        model.train(was_training)
    return scores


def evaluate_pubmedqa(model: torch.nn.Module, tokenizer, items: Sequence, *, batch_size: int = 32,
                      progress: bool = True, keep_predictions: bool = True) -> dict[str, Any]:
    """Zero-shot yes/no/maybe accuracy and macro-F1 of `model` on PubMedQA `items`.

    `items` have .question, .contexts, .labels (section names), .final_decision and .pmid (the
    PubMedQAItem of lightbrain.data.sources). The majority-class baseline of the same items is
    reported beside the model's numbers.
    """
    items = list(items)
    if not items:
        raise ValueError("no PubMedQA items to evaluate")
    for item in items:
        if item.final_decision not in ANSWERS:
            raise ValueError(f"PubMedQA item {item.pmid}: final_decision is {item.final_decision!r}, expected one of "
                             f"{', '.join(ANSWERS)} (unlabelled items cannot be scored)")
    answer_ids = {a: tokenizer.encode(answer_text(a)) for a in ANSWERS}
    budget = model.config.block_size + 1 - max(len(ids) for ids in answer_ids.values())
    prompts = [encode_decision_prompt(tokenizer, item, budget) for item in items]
    requests = [(p.ids, answer_ids[a]) for p in prompts for a in ANSWERS]
    flat = continuation_logprobs(model, requests, tokenizer.eot_id, batch_size=batch_size, progress=progress)
    scores = [dict(zip(ANSWERS, flat[i:i + len(ANSWERS)])) for i in range(0, len(flat), len(ANSWERS))]
    predicted = [max(ANSWERS, key=s.__getitem__) for s in scores]  # ties go to the earlier answer
    gold = [item.final_decision for item in items]

    result: dict[str, Any] = {"task": "pubmedqa", "n_items": len(items)}
    result.update(classification_metrics(gold, predicted))
    result["majority_baseline"] = majority_baseline(gold)
    result["published_accuracy"] = dict(PUBLISHED_ACCURACY)
    result["method"] = {
        "scoring": "zero-shot; summed log-likelihood of each answer's tokens after the prompt",
        "answers": {a: answer_text(a) for a in ANSWERS},
        "cue": DECISION_CUE,
        "prompt_budget_tokens": budget,
        "truncated_prompts": sum(p.truncated for p in prompts),
    }
    if keep_predictions:
        result["predictions"] = [{"pmid": item.pmid, "gold": g, "predicted": p, "logprobs": s}
                                 for item, g, p, s in zip(items, gold, predicted, scores)]
    return result


# ---------------------------------------------------------------------------------------------
# long answers and ROUGE

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Mean ROUGE-1/2/L F-measure (Porter stemming, as is usual) and the per-pair scores."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise RuntimeError("ROUGE needs the rouge-score package: pip install 'lightbrain[hf]'") from None
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no texts to score")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    pairs = [{k: s.fmeasure for k, s in scorer.score(ref, pred).items()} for pred, ref in zip(predictions, references)]
    means = {k: sum(p[k] for p in pairs) / len(pairs) for k in ROUGE_TYPES}
    return {**means, "per_item": pairs}


def _last_sentence(text: str) -> str:
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]
    return sentences[-1] if sentences else ""


def _clean_generation(tokenizer, ids: Iterable[int]) -> str:
    """Text up to the first end-of-text token, then up to the first line break: a conclusion is one
    paragraph, and after it a model tends to start the next document or section."""
    kept = []
    for token in ids:
        if token == tokenizer.eot_id:
            break
        kept.append(int(token))
    text = tokenizer.decode_bytes(kept).decode("utf-8", errors="replace")
    return text.split("\n", 1)[0].strip()


@torch.inference_mode()
def generate_conclusions(model: torch.nn.Module, tokenizer, items: Sequence, max_new_tokens: int = 64,
                         batch_size: int = 16, progress: bool = True) -> tuple[list[str], int]:
    """Greedy conclusions for `items` and the prompt budget used. The prompt is cut to leave room for
    max_new_tokens, so the model never has to slide its window (which would drop the question)."""
    from lightbrain.inference.generate import generate

    budget = model.config.block_size - max_new_tokens
    if budget < 16:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves {budget} of the model's {model.config.block_size} "
                         "context tokens for the prompt; ask for fewer new tokens")
    prompts = [encode_conclusion_prompt(tokenizer, item, budget).ids for item in items]
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts):
        by_length.setdefault(len(ids), []).append(i)  # generate() takes equal-length rows
    batches = [group[s:s + batch_size] for group in by_length.values() for s in range(0, len(group), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="conclusions", unit="batch")
    device = _device(model)
    outputs = [""] * len(items)
    for batch in batches:
        idx = torch.tensor([prompts[i] for i in batch], dtype=torch.long, device=device)
        out = generate(model, idx, max_new_tokens, temperature=0)
        for row, i in enumerate(batch):
            outputs[i] = _clean_generation(tokenizer, out[row, idx.size(1):].tolist())
    return outputs, budget


def evaluate_long_answer_rouge(model: torch.nn.Module, tokenizer, items: Sequence, *, limit: int | None = None,
                               max_new_tokens: int = 64, batch_size: int = 16, progress: bool = True,
                               keep_examples: bool = True) -> dict[str, Any]:
    """ROUGE-1/2/L F-measure of greedily generated conclusions against each item's long_answer.

    `limit` scores only the first `limit` items (generation is the slow part). A model-free
    reference point is reported too: the last sentence of the abstract's final context section
    (usually the last result), taken as the conclusion.
    """
    items = [item for item in items][:limit] if limit else list(items)
    if not items:
        raise ValueError("no PubMedQA items to evaluate")
    for item in items:
        if not (item.long_answer or "").strip():
            raise ValueError(f"PubMedQA item {item.pmid} has no long_answer to compare with")
    references = [item.long_answer.strip() for item in items]
    generated, budget = generate_conclusions(model, tokenizer, items, max_new_tokens, batch_size, progress)
    scores = rouge_scores(generated, references)
    baseline = rouge_scores([_last_sentence(item.contexts[-1]) if item.contexts else "" for item in items],
                            references)
    result: dict[str, Any] = {"task": "pubmedqa_long_answer_rouge", "n_items": len(items)}
    result.update({k: scores[k] for k in ROUGE_TYPES})
    result["last_context_sentence_baseline"] = {k: baseline[k] for k in ROUGE_TYPES}
    result["method"] = {
        "decoding": "greedy", "max_new_tokens": max_new_tokens, "prompt_budget_tokens": budget,
        "cue": CONCLUSION_CUE, "rouge": "F-measure, Porter stemmer (rouge-score)",
        "stop": "first end-of-text token or line break",
    }
    if keep_examples:
        result["examples"] = [{"pmid": item.pmid, "generated": g, "reference": r, **s}
                              for item, g, r, s in zip(items, generated, references, scores["per_item"])]
    result["disclaimer"] = DISCLAIMER
    return result


# ---------------------------------------------------------------------------------------------
# reports


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _pubmedqa_markdown(r: dict[str, Any]) -> list[str]:
    base = r["majority_baseline"]
    rows = [(f"{r.get('model', 'this model')} (zero-shot)", _pct(r["accuracy"]), f"{r['macro_f1']:.3f}"),
            (f"majority class (always \"{base['answer']}\")", _pct(base["accuracy"]), f"{base['macro_f1']:.3f}")]
    rows += [(f"{name} (published)", _pct(acc), "-") for name, acc in r.get("published_accuracy", {}).items()]
    lines = [f"## PubMedQA yes/no/maybe ({r['n_items']} items)", ""] + _table(("", "accuracy", "macro-F1"), rows)
    lines.append("")
    lines += _table(("answer", "precision", "recall", "F1", "gold", "predicted"),
                    [(label, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"],
                      c["predicted"]) for label, c in r["per_class"].items()])
    method = r.get("method", {})
    lines += ["", f"Scoring: {method.get('scoring', '-')}. Prompts cut to fit the context: "
              f"{method.get('truncated_prompts', '-')} of {r['n_items']}."]
    return lines


def _rouge_markdown(r: dict[str, Any]) -> list[str]:
    base = r["last_context_sentence_baseline"]
    rows = [(f"{r.get('model', 'this model')} (greedy)", *(_pct(r[k]) for k in ROUGE_TYPES)),
            ("last sentence of the context (no model)", *(_pct(base[k]) for k in ROUGE_TYPES))]
    lines = [f"## PubMedQA long answers, ROUGE F-measure ({r['n_items']} items)", ""]
    lines += _table(("", "ROUGE-1", "ROUGE-2", "ROUGE-L"), rows)
    if r.get("examples"):
        example = r["examples"][0]
        lines += ["", f"Example (PMID {example['pmid']}):", "", f"> generated: {example['generated'] or '(empty)'}",
                  ">", f"> reference: {example['reference']}"]
    return lines


def results_markdown(results: dict[str, Any] | Sequence[dict[str, Any]]) -> str:
    """A Markdown report of one or more result dicts from this module."""
    results = [results] if isinstance(results, dict) else list(results)
    lines = ["# LightBrain medical benchmarks", "", f"_{DISCLAIMER}_", ""]
    for r in results:
        if r.get("task") == "pubmedqa":
            lines += _pubmedqa_markdown(r)
        elif r.get("task") == "pubmedqa_long_answer_rouge":
            lines += _rouge_markdown(r)
        else:
            raise ValueError(f"cannot report task {r.get('task')!r}; expected a result of evaluate_pubmedqa "
                             "or evaluate_long_answer_rouge")
        lines.append("")
    return "\n".join(lines)


def write_results(results: dict[str, Any] | Sequence[dict[str, Any]], json_path: str | Path | None = None,
                  md_path: str | Path | None = None) -> None:
    """Write result dict(s) as JSON and/or Markdown (atomically; either path may be None)."""
    if json_path is not None:
        atomic_write_text(Path(json_path), json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    if md_path is not None:
        atomic_write_text(Path(md_path), results_markdown(results))
