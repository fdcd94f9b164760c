"""Instruction-style examples for fine-tuning: a prompt, the answer the model should write after it,
and the token rows that teach it (loss on the answer tokens only).

Two sources, both with the prompt templates of evaluation/prompts.py, so a fine-tuned model sees
exactly the text it is evaluated on:

- PubMedQA: per labelled item, a decision example (context + question -> " yes" / " no" / " maybe")
  and a conclusion example (question + context -> the abstract's conclusion). Only items outside the
  official test split (test_ground_truth.json) are used: the 500 other labelled items.
- MedQuAD: per answered pair, "Question: ...\\nAnswer:" -> the answer. Pairs come from the MedQuAD
  files that the pretraining split rule (data/split.py) puts in train; pairs of held-out files are
  returned apart, for a held-out loss, and never trained on.

One training row holds at most block_size + 1 tokens: an end-of-text token, the prompt, the answer,
and an end-of-text token that teaches the model to stop. When that is too long, the prompt shrinks to
make room for the answer (its context is cut in the middle, as in evaluation), but it always keeps at
least half the row, or all of itself when shorter; an answer that still does not fit keeps its start.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from lightbrain.data.cleaning import normalise_whitespace
from lightbrain.data.sources import (DataError, Document, load_pubmedqa_items, medquad_document, medquad_files,
                                     medquad_pairs, parse_source, pubmedqa_test_pmids)
from lightbrain.data.split import split_of
from lightbrain.evaluation.prompts import (Segments, answer_text, conclusion_example, conclusion_segments,
                                           decision_segments, fit_prompt, question_answer_example,
                                           question_segments)

DATA_CHOICES = ("pubmedqa", "medquad", "both")
PUBMEDQA_TASKS = ("decision", "conclusion")


@dataclass
class InstructionExample:
    source: str  # pubmedqa | medquad
    task: str  # decision | conclusion (PubMedQA), answer (MedQuAD)
    key: str  # the PMID, or "<MedQuAD file>#<pair number>"
    segments: Segments  # the prompt, as prompts.fit_prompt takes it
    completion: str  # what the model should write after the prompt

    @property
    def prompt(self) -> str:
        return "".join(text for _, text in self.segments)


@dataclass
class EncodedExample:
    ids: list[int]  # end-of-text, prompt, answer (, end-of-text): at most block_size + 1 tokens
    prompt_len: int  # how many of `ids` are prompt (the end-of-text token included)
    truncated: bool  # part of the prompt or of the answer was left out to fit


# ----------------------------------------------------------------------------------------------------------
# reading the sources


def _subfolder(source: Path, name: str) -> Path:
    """`source` may be the data root (holding pubmedqa/, medquad/) or the dataset's own folder."""
    return source / name if (source / name).is_dir() else source


def pubmedqa_examples(source: str | Path, tasks: Sequence[str] = PUBMEDQA_TASKS) -> list[InstructionExample]:
    """Decision and/or conclusion examples of every labelled PubMedQA item outside the official test split."""
    unknown = [t for t in tasks if t not in PUBMEDQA_TASKS]
    if unknown or not tasks:
        raise ValueError(f"PubMedQA tasks are {', '.join(PUBMEDQA_TASKS)}; got {', '.join(tasks) or 'none'}")
    folder = _subfolder(Path(source), "pubmedqa")
    items = load_pubmedqa_items({"type": "pubmedqa", "path": str(folder)})
    try:
        test_pmids = pubmedqa_test_pmids(folder)
    except DataError as exc:
        raise DataError(f"{exc}; fine-tuning needs it to leave the test items out") from None
    examples = []
    for item in items:
        if item.pmid in test_pmids:
            continue
        if "decision" in tasks and item.final_decision:
            examples.append(InstructionExample("pubmedqa", "decision", item.pmid, decision_segments(item),
                                               answer_text(item.final_decision)))
        if "conclusion" in tasks and item.long_answer.strip():
            examples.append(InstructionExample("pubmedqa", "conclusion", item.pmid, conclusion_segments(item),
                                               conclusion_example(item)[1]))
    return examples


def medquad_examples(source: str | Path, validation_one_in: int,
                     progress: bool = False) -> dict[str, list[InstructionExample]]:
    """{"train": [...], "validation": [...]} question-answer examples of the answered MedQuAD pairs, each file
    in the split that data/split.py gives it with `validation_one_in` (use the base model's data setting).

    A training pair that repeats a held-out pair word for word, or an earlier training pair, is left out."""
    from tqdm.auto import tqdm

    spec = parse_source({"type": "medquad", "path": str(_subfolder(Path(source), "medquad"))})
    out: dict[str, list[InstructionExample]] = {"train": [], "validation": []}
    for path in tqdm(medquad_files(spec), desc="MedQuAD", unit="file", disable=not progress, leave=False):
        rel = path.relative_to(spec.path).as_posix()
        for n, (question, answer) in enumerate(medquad_pairs(path, path.read_bytes()), start=1):
            text = medquad_document(question, answer)  # the pretraining document, cleaned the same way
            head = normalise_whitespace(question)
            if not text or not head:
                continue  # unanswered, or no question
            split = split_of(Document(text, group=rel), validation_one_in)
            answer_clean = text[len(head) + 1:]  # the document is "question\nanswer"
            out[split].append(InstructionExample("medquad", "answer", f"{rel}#{n}", question_segments(question),
                                                 question_answer_example(question, answer_clean)[1]))
    held_out = {(e.prompt, e.completion) for e in out["validation"]}
    kept = []
    for example in out["train"]:
        pair = (example.prompt, example.completion)
        if pair not in held_out:
            held_out.add(pair)
            kept.append(example)
    out["train"] = kept
    return out


def load_examples(data: str, source: str | Path, validation_one_in: int,
                  pubmedqa_tasks: Sequence[str] = PUBMEDQA_TASKS, limit: int | None = None, seed: int = 0,
                  progress: bool = False) -> dict[str, list[InstructionExample]]:
    """{"train": [...], "validation": [...]} for `data` (pubmedqa, medquad or both) under `source`.

    `limit` keeps at most that many training examples per source (a seeded random choice), for quick runs.
    Validation holds the held-out MedQuAD pairs only: PubMedQA's other labelled items are its test split.
    """
    if data not in DATA_CHOICES:
        raise ValueError(f"--data must be one of {', '.join(DATA_CHOICES)}, got {data!r}")
    source = Path(source)
    if not source.exists():
        raise DataError(f"fine-tuning data not found: {source} (give the folder holding pubmedqa/ and medquad/, "
                        "e.g. --source ../shared/data)")
    parts: list[dict[str, list[InstructionExample]]] = []
    if data in ("pubmedqa", "both"):
        parts.append({"train": pubmedqa_examples(source, pubmedqa_tasks), "validation": []})
    if data in ("medquad", "both"):
        parts.append(medquad_examples(source, validation_one_in, progress))
    rng = random.Random(seed)
    out: dict[str, list[InstructionExample]] = {"train": [], "validation": []}
    for part in parts:
        train = part["train"]
        if limit is not None and len(train) > limit:
            train = [train[i] for i in sorted(rng.sample(range(len(train)), limit))]
        out["train"] += train
        out["validation"] += part["validation"]
    if not out["train"]:
        raise DataError(f"no fine-tuning examples for --data {data} under {source}: expected PubMedQA "
                        "(ori_pqal.json + test_ground_truth.json) and/or MedQuAD XML files with answers there")
    return out


# ----------------------------------------------------------------------------------------------------------
# token rows


def encode_example(tokenizer, example: InstructionExample, block_size: int) -> EncodedExample:
    """The example's token row (see the module docstring for how a long one is cut)."""
    completion = tokenizer.encode(example.completion)
    if not completion:
        raise ValueError(f"{example.source} {example.key}: the answer is empty")
    room = block_size + 1  # block_size inputs, each with its next token as target
    whole = fit_prompt(tokenizer, example.segments, 1 << 30)
    floor = min(len(whole.ids), room // 2)
    budget = max(room - len(completion) - 1, floor)  # room for the answer and its end-of-text token
    try:
        prompt = whole if len(whole.ids) <= budget else fit_prompt(tokenizer, example.segments, budget)
    except ValueError as exc:
        raise ValueError(f"{example.source} {example.key}: {exc}") from None
    ids = prompt.ids + completion + [tokenizer.eot_id]
    return EncodedExample(ids[:room], len(prompt.ids), prompt.truncated or len(ids) > room)


def make_batch(rows: Sequence[EncodedExample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs x and targets y, (B, T) each, T the longest row less one. A target is -1 (no
    loss) on prompt tokens and padding, so the loss counts only the answer (and its end-of-text token)."""
    length = max(len(r.ids) for r in rows) - 1
    x = torch.full((len(rows), length), pad_id, dtype=torch.long)
    y = torch.full((len(rows), length), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        ids = torch.tensor(row.ids, dtype=torch.long)
        n = len(row.ids) - 1
        x[b, :n] = ids[:-1]
        y[b, :n] = ids[1:]
        # position i predicts token i + 1, so the first answer token is the target at the prompt's last position
        y[b, :row.prompt_len - 1] = -1
    return x, y
