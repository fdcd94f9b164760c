"""Source readers on tiny fixtures written here, and on the real ../shared/data where it matters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightbrain.data.cleaning import drop_duplicates, normalise_whitespace
from lightbrain.data.sources import (
    DataError,
    Document,
    expand_sources,
    load_pubmedqa_items,
    load_source,
    medquad_pairs,
    parse_source,
    pubmedqa_document,
    pubmedqa_test_pmids,
    source_sha256,
)

PQAL = {
    "111": {
        "QUESTION": "Does  aspirin reduce fever?",
        "CONTEXTS": ["Aspirin is common.", "We gave  aspirin\n to 10 patients."],
        "LABELS": ["BACKGROUND", "METHODS"],
        "MESHES": ["Aspirin", "Fever"],
        "YEAR": "2001",
        "reasoning_required_pred": "yes",
        "reasoning_free_pred": "yes",
        "final_decision": "yes",
        "LONG_ANSWER": "Aspirin reduced fever.",
    },
    "222": {
        "QUESTION": "Is sleep useful?",
        "CONTEXTS": ["Sleep was studied."],
        "LABELS": ["OBJECTIVE"],
        "MESHES": [],
        "YEAR": None,
        "reasoning_required_pred": "maybe",
        "reasoning_free_pred": "maybe",
        "final_decision": "maybe",
        "LONG_ANSWER": "Perhaps.",
    },
}


def write_pubmedqa(folder: Path, test=("222",)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ori_pqal.json").write_text(json.dumps(PQAL), encoding="utf-8")
    (folder / "test_ground_truth.json").write_text(json.dumps({p: PQAL[p]["final_decision"] for p in test}))
    return folder


def hub_rows():
    return [
        {"pubid": int(pmid), "question": r["QUESTION"],
         "context": {"contexts": r["CONTEXTS"], "labels": r["LABELS"], "meshes": r["MESHES"]},
         "long_answer": r["LONG_ANSWER"], "final_decision": r["final_decision"]}
        for pmid, r in PQAL.items()
    ]


# ---------------------------------------------------------------------------------------------- PubMedQA


def test_pubmedqa_original_json_items_and_document(tmp_path):
    folder = write_pubmedqa(tmp_path / "pubmedqa")
    items = load_pubmedqa_items(folder)
    assert [i.pmid for i in items] == ["111", "222"]
    first = items[0]
    assert first.labels == ["BACKGROUND", "METHODS"] and first.meshes == ["Aspirin", "Fever"]
    assert first.year == "2001" and items[1].year is None and first.final_decision == "yes"
    assert pubmedqa_document(first) == (
        "Does aspirin reduce fever?\n\nBACKGROUND: Aspirin is common.\n"
        "METHODS: We gave aspirin\nto 10 patients.\nCONCLUSIONS: Aspirin reduced fever."
    )
    # the final decision is a benchmark label, never part of the training text
    assert "yes" not in pubmedqa_document(first).lower().split()
    assert pubmedqa_test_pmids(folder) == {"222"}
    assert pubmedqa_test_pmids(tmp_path) == {"222"}  # a data folder holding pubmedqa/
    assert load_pubmedqa_items(tmp_path)[1].pmid == "222"


def test_pubmedqa_parquet_layout_matches_json(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "hub" / "pqa_labeled" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(hub_rows()), path)
    from_parquet = load_pubmedqa_items(path)
    from_json = load_pubmedqa_items(write_pubmedqa(tmp_path / "json"))
    assert [i.pmid for i in from_parquet] == ["111", "222"]
    assert all(i.year is None for i in from_parquet)
    assert [pubmedqa_document(i) for i in from_parquet] == [pubmedqa_document(i) for i in from_json]
    assert [i.pmid for i in load_pubmedqa_items(tmp_path / "hub")] == ["111", "222"]  # the hub's folder layout


def test_pubmedqa_source_puts_test_items_in_validation(tmp_path):
    folder = write_pubmedqa(tmp_path / "pubmedqa")
    loaded = load_source(parse_source({"type": "pubmedqa", "path": str(folder)}))
    assert [d.split for d in loaded.documents] == ["train", "validation"]
    assert loaded.sha256 == source_sha256(loaded.spec)
    # without the test split file the source says so and falls back to the hash rule
    (folder / "test_ground_truth.json").unlink()
    loaded = load_source(parse_source({"type": "pubmedqa", "path": str(folder)}))
    assert [d.split for d in loaded.documents] == [None, None] and "test_pmids" in loaded.notes[0]


def test_pubmedqa_errors(tmp_path):
    with pytest.raises(DataError, match="test_ground_truth.json"):
        pubmedqa_test_pmids(tmp_path)
    bad = tmp_path / "pubmedqa"
    bad.mkdir()
    (bad / "ori_pqal.json").write_text(json.dumps({"9": {"TITLE": "x"}}))
    with pytest.raises(DataError, match=r"record '9' lacks QUESTION/CONTEXTS; it has \['TITLE'\]"):
        load_pubmedqa_items(bad)


def test_pubmedqa_real_data(shared_data):
    items = load_pubmedqa_items(shared_data / "pubmedqa")
    test = pubmedqa_test_pmids(shared_data / "pubmedqa")
    assert len(items) == 1000 and len(test) == 500
    assert test <= {i.pmid for i in items}
    assert all(len(i.labels) == len(i.contexts) for i in items)
    assert sum(i.year is None for i in items) == 58
