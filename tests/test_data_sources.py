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


# ---------------------------------------------------------------------------------------------- MedQuAD

MEDQUAD_UPPER = """<?xml version="1.0" encoding="UTF-8"?>
<Document id="0000001" source="GARD" url="https://example.org/a">
<Focus>Fever</Focus>
<QAPairs>
  <QAPair pid="1"><Question qid="1-1" qtype="information">What is (are)   Fever ?</Question>
    <Answer>Fever is a raised
                    body temperature.    - It is common.    - It passes.</Answer></QAPair>
  <QAPair pid="2"><Question qid="1-2" qtype="treatment">How to treat Fever ?</Question><Answer>  </Answer></QAPair>
  <QAPair pid="3"><Question qid="1-3" qtype="causes">What causes Fever ?</Question><Answer>Infections.</Answer></QAPair>
</QAPairs>
</Document>
"""
MEDQUAD_LOWER = """<?xml version="1.0" encoding="UTF-8"?>
<doc docid="0000007" corpus="NINDS" url="https://example.org/b">
<doctitle-focus>Holmes-Adie</doctitle-focus>
<qaPairs><pair pid="1"><question qid="7-1" qtype="information">what is holmes-adie syndrome ?</question>
<answer>A disorder of the pupil.</answer></pair></qaPairs>
</doc>
"""
MEDQUAD_DISEASE_FILE = """<?xml version="1.0" encoding="UTF-8"?>
<DiseaseFile fid="0000397" source="CDC" url="https://example.org/c">
<Focus>Taeniasis</Focus><UMLS><CUI></CUI></UMLS>
<QAPairs><QAPair pid="1"><Question qid="397-1" qtype="information">What is Taeniasis ?</Question>
<Answer>A tapeworm infection.</Answer></QAPair></QAPairs>
</DiseaseFile>
"""


def write_medquad(root: Path) -> Path:
    for rel, text in (("2_GARD_QA/0000001.xml", MEDQUAD_UPPER), ("6_NINDS_QA/0000007.xml", MEDQUAD_LOWER),
                      ("9_CDC_QA/0000397.xml", MEDQUAD_DISEASE_FILE)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    (root / "readme.txt").write_text("not a document")
    return root


def test_medquad_both_schemas_skip_empty_answers(tmp_path):
    root = write_medquad(tmp_path / "medquad")
    assert medquad_pairs(root / "6_NINDS_QA/0000007.xml", MEDQUAD_LOWER.encode()) == [
        ("what is holmes-adie syndrome ?", "A disorder of the pupil.")]
    loaded = load_source(parse_source({"type": "medquad", "path": str(root)}))
    texts = [d.text for d in loaded.documents]
    assert texts == [
        "What is (are) Fever ?\nFever is a raised\nbody temperature.\n- It is common.\n- It passes.",
        "What causes Fever ?\nInfections.",
        "what is holmes-adie syndrome ?\nA disorder of the pupil.",
        "What is Taeniasis ?\nA tapeworm infection.",
    ]
    # every pair of a file carries that file's path (relative to the MedQuAD folder) as its split group
    assert [d.group for d in loaded.documents] == ["2_GARD_QA/0000001.xml"] * 2 + [
        "6_NINDS_QA/0000007.xml", "9_CDC_QA/0000397.xml"]
    assert all(d.split is None for d in loaded.documents)
    assert loaded.sha256 == source_sha256(loaded.spec)
    only_cdc = load_source(parse_source({"type": "medquad", "path": str(root), "folders": ["9_CDC_QA"]}))
    assert [d.group for d in only_cdc.documents] == ["9_CDC_QA/0000397.xml"]
    # a numbered subfolder given alone keeps its paths relative to the MedQuAD folder, so its split is unchanged
    for entry in (str(root / "9_CDC_QA"), {"type": "medquad", "path": str(root / "9_CDC_QA")}):
        [spec] = expand_sources([entry])
        assert (spec.path, spec.folders) == (root, ["9_CDC_QA"])


def test_medquad_bad_xml_names_the_file(tmp_path):
    root = write_medquad(tmp_path / "medquad")
    (root / "9_CDC_QA/0000001.xml").write_text("<Document><QAPairs>")
    with pytest.raises(DataError, match=r"0000001\.xml: not well-formed XML"):
        load_source(parse_source({"type": "medquad", "path": str(root)}))


def test_medquad_real_cdc_folder(shared_data):
    spec = parse_source({"type": "medquad", "path": str(shared_data / "medquad"), "folders": ["9_CDC_QA"]})
    docs = load_source(spec).documents
    assert len(docs) == 270  # all 270 CDC pairs are answered
    assert "9_CDC_QA/0000397.xml" in {d.group for d in docs}  # the <DiseaseFile> oddity
    assert all("  " not in d.text and "\n\n\n" not in d.text for d in docs)


def test_medquad_real_lower_case_ninds_files(shared_data):
    root = shared_data / "medquad"
    for name in ("0000007", "0000018", "0000182", "0000244"):
        path = root / "6_NINDS_QA" / f"{name}.xml"
        pairs = medquad_pairs(path, path.read_bytes())
        assert pairs and all(q.strip() and a.strip() for q, a in pairs)


# ---------------------------------------------------------------------------------------------- MTS-Dialog

MTS_CSV = (
    'ID,section_header,section_text,dialogue\n'
    '0,GENHX,"The patient is a  76-year-old woman.","Doctor: What brings you in?\nPatient: A refill."\n'
    '1,CC,"Cough.","Doctor: Any cough?\r\nPatient: Yes."\n'
)


def test_mts_dialog_files_fix_the_split(tmp_path):
    root = tmp_path / "mts_dialog" / "Main-Dataset"
    root.mkdir(parents=True)
    for name in ("MTS-Dialog-TrainingSet.csv", "MTS-Dialog-ValidationSet.csv", "MTS-Dialog-TestSet-1-MEDIQA-Chat-2023.csv"):
        (root / name).write_text(MTS_CSV.replace("Cough", name[11:15]), encoding="utf-8")
    [spec] = expand_sources([str(tmp_path / "mts_dialog")])
    assert spec.type == "mts_dialog"
    docs = load_source(spec).documents
    assert docs[0].text == ("Dialogue:\nDoctor: What brings you in?\nPatient: A refill.\n\n"
                            "Note (GENHX):\nThe patient is a 76-year-old woman.")
    # files are read in sorted order: TestSet, TrainingSet, ValidationSet
    assert [d.split for d in docs] == ["validation"] * 2 + ["train"] * 2 + ["validation"] * 2
    assert "Patient: Yes." in docs[1].text and "\r" not in docs[1].text


def test_mts_dialog_missing_column(tmp_path):
    path = tmp_path / "MTS-Dialog-TrainingSet.csv"
    path.write_text("ID,section_text\n0,hello\n")
    with pytest.raises(DataError, match=r"row 1 lacks the column\(s\) section_header, dialogue"):
        load_source(parse_source({"type": "mts_dialog", "path": str(path)}))


# ---------------------------------------------------------------------------------------------- generic files


def test_generic_formats(tmp_path):
    (tmp_path / "a.txt").write_text("First  paragraph.\n\n\n\nSecond\tparagraph.\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"text": "one", "id": 1}\n\n{"text": "two"}\n', encoding="utf-8")
    (tmp_path / "c.json").write_text(json.dumps([{"body": "three"}, {"body": "four"}]), encoding="utf-8")
    (tmp_path / "d.csv").write_text('id,text\n1,"five, with comma"\n2,six\n', encoding="utf-8")
    docs = lambda entry: [d.text for d in load_source(parse_source(entry)).documents]  # noqa: E731
    assert docs(str(tmp_path / "a.txt")) == ["First paragraph.\n\nSecond paragraph."]
    assert docs({"type": "txt", "path": str(tmp_path / "a.txt"), "unit": "paragraph"}) == [
        "First paragraph.", "Second paragraph."]
    assert docs(str(tmp_path / "b.jsonl")) == ["one", "two"]
    assert docs({"type": "json", "path": str(tmp_path / "c.json"), "text_field": "body"}) == ["three", "four"]
    assert docs({"type": "csv", "path": str(tmp_path / "d.csv")}) == ["five, with comma", "six"]
    loaded = load_source(parse_source({"type": "jsonl", "path": str(tmp_path / "b.jsonl")}))
    assert [d.group for d in loaded.documents] == ["one", "two"] and loaded.documents[0].split is None
    # a folder with no dataset layout: every supported file below it, in path order
    (tmp_path / "c.json").unlink()
    [spec] = expand_sources([str(tmp_path)])
    assert spec.type == "folder"
    assert [d.text for d in load_source(spec).documents] == [
        "First paragraph.\n\nSecond paragraph.", "one", "two", "five, with comma", "six"]


def test_generic_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"content": "alpha"}, {"content": "beta"}]), tmp_path / "x.parquet")
    spec = parse_source({"path": str(tmp_path / "x.parquet"), "text_field": "content"})
    assert spec.type == "parquet"
    assert [d.text for d in load_source(spec).documents] == ["alpha", "beta"]


def test_shared_data_folder_is_detected(shared_data):
    specs = expand_sources([str(shared_data)])
    assert [(s.type, s.path.name) for s in specs] == [
        ("pubmedqa", "pubmedqa"), ("medquad", "medquad"), ("mts_dialog", "mts_dialog")]
    assert parse_source("hub").type == "pubmedqa" and parse_source("hub").config == "pqa_labeled"
    hub = parse_source({"type": "hub", "name": "qiaojin/PubMedQA", "config": "pqa_artificial"})
    assert (hub.type, hub.path, hub.config) == ("pubmedqa", None, "pqa_artificial")


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_input_errors_name_the_place(tmp_path):
    with pytest.raises(DataError, match="source path not found: .*missing"):
        parse_source(str(tmp_path / "missing"))
    (tmp_path / "notes.docx").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"notes\.docx: unknown format '\.docx'"):
        parse_source(str(tmp_path / "notes.docx"))
    with pytest.raises(DataError, match="unknown type 'pdf'"):
        parse_source({"type": "pdf", "path": str(tmp_path)})
    with pytest.raises(DataError, match="unknown key"):
        parse_source({"type": "txt", "path": str(tmp_path), "textfield": "x"})
    (tmp_path / "r.jsonl").write_text('{"text": "ok"}\n{"body": "no text", "id": 2}\n')
    with pytest.raises(DataError, match=r"r\.jsonl: record 2 \(line 2\): no field 'text'; it has \['body', 'id'\]"):
        load_source(parse_source(str(tmp_path / "r.jsonl")))
    (tmp_path / "latin.txt").write_bytes("caf\u00e9 ok".encode("utf-8") + b" na\xefve")
    with pytest.raises(DataError, match=r"latin\.txt: not valid UTF-8 at byte offset 11 \(byte 0xef\)"):
        load_source(parse_source(str(tmp_path / "latin.txt")))
    with pytest.raises(DataError, match="a hub source needs `name:`"):
        parse_source({"type": "hub"})


def test_hub_unreachable_says_how_to_use_local_data(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"(?s)could not load qiaojin/PubMedQA.*--source \.\./shared/data"):
        load_pubmedqa_items("hub")
    with pytest.raises(DataError, match="could not load some/corpus"):
        load_source(parse_source({"type": "hub", "name": "some/corpus", "text_field": "text"}))


def test_hub_text_dataset(monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = [{"article": "One  text."}, {"article": "Two."}]
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, split: rows)
    spec = parse_source({"type": "hub", "name": "some/corpus", "config": "en", "text_field": "article"})
    loaded = load_source(spec)
    assert [d.text for d in loaded.documents] == ["One text.", "Two."]
    assert loaded.spec.describe() == {"type": "hub", "name": "some/corpus", "config": "en", "split": "train"}
    with pytest.raises(DataError, match=r"record 0: no field 'text'; it has \['article'\]"):
        load_source(parse_source({"type": "hub", "name": "some/corpus"}))


# ---------------------------------------------------------------------------------------------- cleaning


def test_normalise_whitespace_and_duplicates():
    assert normalise_whitespace("  a \t b\r\n\r\n\r\n\n c  \n") == "a b\n\nc"
    seen: set[str] = set()
    first = drop_duplicates([Document("x", "x"), Document("y", "y"), Document("x", "x")], seen)
    assert [d.text for d in first] == ["x", "y"]
    assert [d.text for d in drop_duplicates([Document("y", "g"), Document("z", "z")], seen)] == ["z"]


def test_pubmedqa_from_the_hub_uses_given_test_pmids(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(name, config, split):
        calls.append((name, config, split))
        return hub_rows()

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    folder = write_pubmedqa(tmp_path / "pubmedqa", test=("111",))
    spec = parse_source({"type": "pubmedqa", "config": "pqa_labeled", "test_pmids": str(folder / "test_ground_truth.json")})
    loaded = load_source(spec)
    assert calls == [("qiaojin/PubMedQA", "pqa_labeled", "train")]
    assert [d.split for d in loaded.documents] == ["validation", "train"] and not loaded.notes
    (folder / "test_ground_truth.json").write_text(json.dumps({"222": "maybe"}))
    assert load_source(spec).sha256 != loaded.sha256  # the test split is part of the input
    assert load_source(parse_source("hub")).notes  # no test split known: says so


def test_jsonl_text_may_hold_unicode_line_separators(tmp_path):
    """A JSON string may hold U+2028/U+2029 unescaped (json.dumps(ensure_ascii=False)); only \\n ends a record."""
    import json as _json

    from lightbrain.data.sources import generic_texts

    path = tmp_path / "notes.jsonl"
    docs = ["first\u2028line", "second\u2029para \x1c end"]
    path.write_text("\n".join(_json.dumps({"text": d}, ensure_ascii=False) for d in docs) + "\n", encoding="utf-8")
    assert generic_texts(path, "jsonl", path.read_bytes(), "text", "file") == docs
