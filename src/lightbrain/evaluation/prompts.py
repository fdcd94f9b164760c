"""Prompt templates for PubMedQA, shared by evaluation and fine-tuning so both see the same text.

Two prompts, both built from an item's question and its labelled abstract sections (contexts):

Decision (yes / no / maybe), scored by the likelihood of each answer after the cue:

    <|endoftext|>BACKGROUND: ...
    RESULTS: ...
    Question: Do mitochondria play a role in ...?
    Answer: yes

Conclusion (the long answer), written the way `lightbrain prepare` lays out PubMedQA documents for
pretraining (question, blank line, labelled sections, CONCLUSIONS:), so a pretrained model
continues with a conclusion without being taught a new format:

    <|endoftext|>Do mitochondria play a role in ...?

    BACKGROUND: ...
    RESULTS: ...
    CONCLUSIONS: <generated>

The leading end-of-text token marks the start of a document, as between documents in the
training token stream.

A small model sees only block_size tokens (128 for LightBrain-Tiny), fewer than most abstracts
need (median about 290 GPT-2 tokens of context). The cue is always kept, and the question too
(only one longer than half the budget is shortened to its start; PubMedQA has none); the context
is cut in the middle: its first quarter of the remaining room (the aim) and its
last three quarters (the results, which sit right before the conclusion and decide the answer),
joined by " [...]".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from lightbrain.data.cleaning import normalise_whitespace

ANSWERS = ("yes", "no", "maybe")
CUT_MARK = " [...]"  # stands where the middle of a long context was left out
HEAD_SHARE = 0.25  # share of the context room given to its start; the rest goes to its end
DECISION_CUE = "Answer:"
CONCLUSION_CUE = "CONCLUSIONS:"


@dataclass
class EncodedPrompt:
    ids: list[int]
    truncated: bool  # True when part of the context (or question) was left out to fit


def context_text(contexts: Sequence[str], labels: Sequence[str] | None = None) -> str:
    """One line per abstract section, with its label ("RESULTS: ...") when it has one."""
    labels = list(labels or [])
    lines = []
    for i, context in enumerate(contexts):
        label = labels[i].strip() if i < len(labels) and labels[i] else ""
        text = normalise_whitespace(context).replace("\n", " ")
        lines.append(f"{label}: {text}" if label else text)
    return "\n".join(lines)


def _question(item) -> str:
    return normalise_whitespace(item.question).replace("\n", " ")


# A prompt is a list of (role, text) segments: "context" may be cut in the middle, "question" may be
# shortened when unusually long, "fixed" is always kept. Every segment after the first starts with
# whitespace followed by text, where GPT-2-style pre-tokenizers split anyway, so encoding the
# segments one by one gives the same ids as encoding the joined text (as in the training data).
Segments = list[tuple[str, str]]


def decision_segments(item) -> Segments:
    return [("context", context_text(item.contexts, getattr(item, "labels", None))),
            ("fixed", "\nQuestion:"), ("question", " " + _question(item)), ("fixed", f"\n{DECISION_CUE}")]


def conclusion_segments(item) -> Segments:
    return [("question", _question(item)),
            ("context", "\n\n" + context_text(item.contexts, getattr(item, "labels", None))),
            ("fixed", f"\n{CONCLUSION_CUE}")]


def answer_text(answer: str) -> str:
    """The completion scored (and, in fine-tuning, taught) for a decision: ' yes', ' no' or ' maybe'."""
    if answer not in ANSWERS:
        raise ValueError(f"PubMedQA answers are {', '.join(ANSWERS)}; got {answer!r}")
    return " " + answer


def decision_example(item) -> tuple[str, str]:
    """(prompt, completion) text of the decision task for fine-tuning, before any truncation."""
    return "".join(text for _, text in decision_segments(item)), answer_text(item.final_decision)


def conclusion_example(item) -> tuple[str, str]:
    """(prompt, completion) text of the conclusion task for fine-tuning, before any truncation."""
    prompt = "".join(text for _, text in conclusion_segments(item))
    return prompt, " " + normalise_whitespace(item.long_answer).replace("\n", " ")


def question_segments(question: str) -> Segments:
    """A stand-alone medical question (MedQuAD in fine-tuning): the decision prompt's cues, no context.

        <|endoftext|>Question: What are the symptoms of glaucoma?
        Answer: <the answer>
    """
    return [("fixed", "Question:"), ("question", " " + normalise_whitespace(question).replace("\n", " ")),
            ("fixed", f"\n{DECISION_CUE}")]


def question_answer_example(question: str, answer: str) -> tuple[str, str]:
    """(prompt, completion) text of a question-answer pair for fine-tuning, before any truncation.
    The answer keeps its line breaks (lists, paragraphs)."""
    return "".join(text for _, text in question_segments(question)), " " + normalise_whitespace(answer)


def fit_prompt(tokenizer, segments: Segments, max_tokens: int) -> EncodedPrompt:
    """Encode the segments after an end-of-text token in at most max_tokens tokens."""
    cut = tokenizer.encode(CUT_MARK)
    encoded = [(role, tokenizer.encode(text) if text else []) for role, text in segments]
    truncated = False
    longest_question = max_tokens // 2
    for i, (role, ids) in enumerate(encoded):
        if role == "question" and len(ids) > longest_question:
            encoded[i] = (role, ids[:longest_question - len(cut)] + cut)  # keep the question's start
            truncated = True
    room = max_tokens - 1 - sum(len(ids) for role, ids in encoded if role != "context")
    if room < 0:
        raise ValueError(f"a prompt budget of {max_tokens} tokens cannot hold the question and the cue; "
                         "use a model with a longer context (model.block_size)")
    for i, (role, ids) in enumerate(encoded):
        if role != "context" or len(ids) <= room:
            continue
        keep = room - len(cut)
        if keep <= 0:
            ids = ids[len(ids) - room:] if room else []
        else:
            head = int(keep * HEAD_SHARE)
            ids = ids[:head] + cut + ids[len(ids) - (keep - head):]
        encoded[i] = (role, ids)
        truncated = True
    return EncodedPrompt([tokenizer.eot_id] + [t for _, ids in encoded for t in ids], truncated)


def encode_decision_prompt(tokenizer, item, max_tokens: int) -> EncodedPrompt:
    """The decision prompt's ids in at most max_tokens (leave room for the answer tokens)."""
    return fit_prompt(tokenizer, decision_segments(item), max_tokens)


def encode_conclusion_prompt(tokenizer, item, max_tokens: int) -> EncodedPrompt:
    """The conclusion prompt's ids in at most max_tokens (leave room for the generated text)."""
    return fit_prompt(tokenizer, conclusion_segments(item), max_tokens)
