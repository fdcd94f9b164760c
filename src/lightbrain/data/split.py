"""The train/validation split: deterministic, by document, and fixed by a rule reference numbers depend on.

A document goes to the split its source fixes (PubMedQA's official test items and MTS-Dialog's validation
and test files to validation), otherwise to validation when the sha1 of its group (the MedQuAD file's path
relative to the MedQuAD folder, or the text itself) is 0 modulo `validation_one_in`.
"""

from __future__ import annotations

import hashlib

from lightbrain.data.sources import DataError, Document

SPLITS = ("train", "validation")

SPLIT_RULE = (
    "PubMedQA items whose PMID is in test_ground_truth.json -> validation, its other items -> train; "
    "MTS-Dialog validation and test files -> validation, its training file -> train; "
    "a MedQuAD XML file as a whole -> validation when int(sha1(path relative to the MedQuAD folder, "
    "'/' separators).hexdigest(), 16) % validation_one_in == 0; "
    "any other document -> validation when int(sha1(its text).hexdigest(), 16) % validation_one_in == 0; "
    "everything else -> train"
)


def hashed_to_validation(key: str, validation_one_in: int) -> bool:
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % validation_one_in == 0


def split_of(doc: Document, validation_one_in: int) -> str:
    if doc.split is not None:
        return doc.split
    return "validation" if hashed_to_validation(doc.group, validation_one_in) else "train"


def split_corpus(documents: list[Document], validation_one_in: int) -> dict[str, list[Document]]:
    """{"train": [...], "validation": [...]}, keeping the documents' order; both must be non-empty."""
    splits: dict[str, list[Document]] = {name: [] for name in SPLITS}
    for doc in documents:
        splits[split_of(doc, validation_one_in)].append(doc)
    if not splits["validation"]:
        raise DataError(
            f"the validation split is empty: none of the {len(documents)} documents fell to it under the rule "
            f"(1 in {validation_one_in} by hash). Add more data (e.g. --source ../shared/data) or lower "
            "data.validation_one_in (e.g. data.validation_one_in=5)"
        )
    if not splits["train"]:
        raise DataError(f"the training split is empty: all {len(documents)} documents went to validation. "
                        "Add training data (e.g. a MedQuAD folder or text files)")
    return splits
