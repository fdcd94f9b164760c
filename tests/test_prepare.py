"""`lightbrain prepare` end to end: token files, meta.json, the split rule, dedupe, re-runs and errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from lightbrain.cli import main
from lightbrain.config import DataConfig
from lightbrain.data import prepare as prepare_module
from lightbrain.data.prepare import prepare_data, write_splits
from lightbrain.data.sources import DataError, Document, load_pubmedqa_items, pubmedqa_document, pubmedqa_test_pmids
from lightbrain.data.split import split_corpus
from lightbrain.data.token_files import open_split, split_documents
from lightbrain.data.tokenizers import load_data_tokenizer
from test_data_sources import MTS_CSV, write_medquad, write_pubmedqa

META_KEYS = {"format_version", "tokenizer", "tokenizer_fingerprint", "vocab_size", "dtype", "eot_id", "splits",
             "sources", "split_rule", "validation_one_in", "train_repeats", "input_hash"}


def to_validation(key: str, one_in: int = 20) -> bool:
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % one_in == 0


def make_data_folder(root: Path) -> Path:
    """A miniature ../shared/data: pubmedqa/, medquad/, mts_dialog/ and a top-level jsonl."""
    write_pubmedqa(root / "pubmedqa")
    write_medquad(root / "medquad")
    mts = root / "mts_dialog" / "Main-Dataset"
    mts.mkdir(parents=True)
    (mts / "MTS-Dialog-TrainingSet.csv").write_text(MTS_CSV, encoding="utf-8")
    (mts / "MTS-Dialog-ValidationSet.csv").write_text(MTS_CSV.replace("Cough", "Headache"), encoding="utf-8")
    lines = [{"text": f"Extra note number {i} about  hypertension."} for i in range(40)]
    lines.append({"text": "Infections."})  # not a duplicate: MedQuAD's document is "Question\nAnswer"
    lines.append({"text": "Extra note number 3 about hypertension."})  # a duplicate once whitespace is normalised
    (root / "notes.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return root


def decoded_splits(out: Path) -> dict[str, list[str]]:
    meta = json.loads((out / "meta.json").read_text())
    tok = load_data_tokenizer(out)
    result = {}
    for split in ("train", "validation"):
        tokens = open_split(out, split).tokens
        assert tokens.dtype == np.dtype(meta["dtype"]) and tokens[-1] == meta["eot_id"]
        result[split] = [tok.decode_bytes(d.tolist()).decode("utf-8") for d in split_documents(tokens, meta["eot_id"])]
    return result


@pytest.fixture
def data_folder(tmp_path):
    return make_data_folder(tmp_path / "data")


@pytest.mark.parametrize("tokenizer", ["gpt2", "medical-bpe"])
def test_prepare_writes_decodable_token_files(tmp_path, data_folder, tokenizer, request):
    if tokenizer == "gpt2":
        request.getfixturevalue("tiktoken_cache")
    out = tmp_path / "out"
    meta = prepare_data(DataConfig(sources=[str(data_folder)], out_dir=str(out), tokenizer=tokenizer,
                                   bpe_vocab_size=300), progress=False)
    assert set(meta) == META_KEYS
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["tokenizer"] == ({"name": "gpt2"} if tokenizer == "gpt2" else {"name": "medical-bpe", "file": "tokenizer.json"})
    assert (out / "tokenizer.json").is_file() == (tokenizer == "medical-bpe")
    assert meta["dtype"] == "uint16" and meta["validation_one_in"] == 20

    splits = decoded_splits(out)
    train, val = splits["train"], splits["validation"]
    assert not set(train) & set(val)  # no document in two splits
    assert len(set(train)) == len(train) and len(set(val)) == len(val)  # duplicates removed
    for split, docs in splits.items():
        s = meta["splits"][split]
        assert s["documents"] == len(docs)
        assert s["bytes"] == sum(len(d.encode("utf-8")) for d in docs)
        assert s["tokens"] == (out / f"{split}.bin").stat().st_size // 2
    assert [s["type"] for s in meta["sources"]] == ["pubmedqa", "medquad", "mts_dialog", "jsonl"]
    assert sum(s["documents"] for s in meta["sources"]) == len(train) + len(val)
    assert all(len(s["sha256"]) == 64 for s in meta["sources"])

    # the split rule, recomputed here from the inputs
    items = {i.pmid: pubmedqa_document(i) for i in load_pubmedqa_items(data_folder / "pubmedqa")}
    assert items["222"] in val and items["111"] in train  # 222 is the fixture's official test item
    fever = [d for d in train + val if "Fever" in d]
    assert len(fever) == 2 and all((d in val) == to_validation("2_GARD_QA/0000001.xml") for d in fever)
    assert "Dialogue:\nDoctor: Any cough?\nPatient: Yes.\n\nNote (CC):\nHeadache." in val
    assert "Dialogue:\nDoctor: Any cough?\nPatient: Yes.\n\nNote (CC):\nCough." in train
    extras = [f"Extra note number {i} about hypertension." for i in range(40)]
    assert [d for d in val if d.startswith("Extra")] == [t for t in extras if to_validation(t)]
    assert [d for d in train if d.startswith("Extra")] == [t for t in extras if not to_validation(t)]
    assert "Infections." in train + val and "What causes Fever ?\nInfections." in train + val


def test_prepare_is_deterministic_and_skips_unchanged_inputs(tmp_path, data_folder, monkeypatch):
    cfg = lambda out: DataConfig(sources=[str(data_folder)], out_dir=str(out), tokenizer="medical-bpe",  # noqa: E731
                                 bpe_vocab_size=300)
    first, second = tmp_path / "a", tmp_path / "b"
    meta = prepare_data(cfg(first), progress=False)
    prepare_data(cfg(second), progress=False)
    for name in ("train.bin", "validation.bin", "tokenizer.json", "meta.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name

    stamps = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}

    def no_work(*args, **kwargs):
        raise AssertionError("tokenized again although nothing changed")

    monkeypatch.setattr(prepare_module, "write_splits", no_work)
    assert prepare_data(cfg(first), progress=False) == meta
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == stamps
    # a changed setting, a changed input or --force all rebuild
    for change in ({"validation_one_in": 10}, {"force": True}):
        with pytest.raises(AssertionError, match="tokenized again"):
            prepare_data(DataConfig(**{**cfg(first).__dict__, **change}), progress=False)
    with (data_folder / "notes.jsonl").open("a") as f:
        f.write('{"text": "A new note."}\n')
    with pytest.raises(AssertionError, match="tokenized again"):
        prepare_data(cfg(first), progress=False)
    # the failed rebuild never touched the finished set: the previous build is still whole and usable
    assert json.loads((first / "meta.json").read_text()) == meta
    assert not list(first.glob(".*staging"))


def test_medical_bpe_is_trained_on_the_training_split_only(tmp_path, data_folder, monkeypatch):
    seen = []
    real = prepare_module.train_medical_bpe

    def spy(texts, vocab_size, show_progress=False):
        seen.extend(texts)
        return real(texts, vocab_size)

    monkeypatch.setattr(prepare_module, "train_medical_bpe", spy)
    prepare_data(DataConfig(sources=[str(data_folder)], out_dir=str(tmp_path / "o"), tokenizer="medical-bpe",
                            bpe_vocab_size=300), progress=False)
    splits = decoded_splits(tmp_path / "o")
    assert seen == splits["train"]


def test_uint32_when_the_vocabulary_exceeds_uint16(tmp_path):
    class BigVocab:
        vocab_size, eot_id = 70_000, 69_999

        def encode_batch(self, texts, num_threads=1):
            return [[65_536 + len(t), 7] for t in texts]

    segments = {"train": [(0, "txt", ["ab", "c"])], "validation": [(0, "txt", ["d"])]}
    staged = {}
    stats = write_splits(tmp_path, BigVocab(), segments, num_threads=1, progress=False, staged=staged)
    train = np.fromfile(staged["train.bin"], dtype=np.uint32)
    assert train.tolist() == [65_538, 7, 69_999, 65_537, 7, 69_999]
    assert stats["train"] == {"documents": 2, "tokens": 6, "bytes": 3,
                              "sources": [{"type": "txt", "source": 0, "documents": 2, "tokens": 6, "bytes": 3,
                                           "copies": 1}]}


def test_split_rule_and_empty_splits():
    docs = [Document(f"text {i}", f"text {i}") for i in range(200)]
    splits = split_corpus(docs, 20)
    assert [d.text for d in splits["validation"]] == [d.text for d in docs if to_validation(d.text)]
    assert splits["validation"] and splits["train"]
    forced = [Document("a", "a", split="validation"), Document("b", "b", split="train")]
    assert [d.text for d in split_corpus(forced, 20)["validation"]] == ["a"]
    train_only = [d for d in docs if not to_validation(d.text)][:5]
    with pytest.raises(DataError, match=r"validation split is empty.*lower data\.validation_one_in"):
        split_corpus(train_only, 20)
    with pytest.raises(DataError, match="training split is empty"):
        split_corpus([Document("a", "a", split="validation")], 20)


def write_jsonl(path: Path, texts: list[str]) -> str:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return str(path)


def test_corpus_errors(tmp_path):
    out = str(tmp_path / "out")
    empty = write_jsonl(tmp_path / "empty.jsonl", ["", "   \n "])
    with pytest.raises(DataError, match=r"empty\.jsonl.*holds no text after cleaning"):
        prepare_data(DataConfig(sources=[empty], out_dir=out), progress=False)
    same = write_jsonl(tmp_path / "same.jsonl", ["one text", "one  text", "one text "])
    with pytest.raises(DataError, match="the corpus is all duplicates: its 3 documents are one text"):
        prepare_data(DataConfig(sources=[same], out_dir=out), progress=False)
    texts = write_jsonl(tmp_path / "texts.jsonl", [f"doc {i}" for i in range(50)])
    with pytest.raises(DataError, match=r"all 50 documents are exact duplicates .* listed twice"):
        prepare_data(DataConfig(sources=[texts, texts], out_dir=out), progress=False)
    train_only = write_jsonl(tmp_path / "few.jsonl", [t for t in (f"doc {i}" for i in range(50)) if not to_validation(t)][:3])
    with pytest.raises(DataError, match="validation split is empty"):
        prepare_data(DataConfig(sources=[train_only], out_dir=out), progress=False)
    assert not Path(out).exists()


def test_real_data_split(tmp_path, shared_data, tiktoken_cache):
    sources = [str(shared_data / "pubmedqa"), str(shared_data / "mts_dialog"),
               {"type": "medquad", "path": str(shared_data / "medquad"), "folders": ["9_CDC_QA", "6_NINDS_QA"]}]
    out = tmp_path / "out"
    meta = prepare_data(DataConfig(sources=sources, out_dir=str(out)), progress=False)
    splits = decoded_splits(out)
    val, train = set(splits["validation"]), set(splits["train"])
    items = load_pubmedqa_items(shared_data / "pubmedqa")
    test = pubmedqa_test_pmids(shared_data / "pubmedqa")
    assert all((pubmedqa_document(i) in val) == (i.pmid in test) for i in items)
    assert all(pubmedqa_document(i) in train for i in items if i.pmid not in test)
    assert meta["sources"][1]["documents"] == 1698  # MTS-Dialog's 1,701 rows minus 3 repeated dialogues
    # each MedQuAD file lands whole in the split its relative path hashes to
    from lightbrain.data.sources import load_source, parse_source

    loaded = load_source(parse_source(sources[2]))
    by_file: dict[str, set[bool]] = {}
    for doc in loaded.documents:
        if doc.text in val or doc.text in train:
            by_file.setdefault(doc.group, set()).add(doc.text in val)
    assert all(flags == {to_validation(group)} for group, flags in by_file.items())
    assert any(to_validation(g) for g in by_file) and not all(to_validation(g) for g in by_file)


def test_cli_end_to_end(tmp_path, data_folder, capsys):
    out = tmp_path / "cli_out"
    args = ["prepare", "--source", str(data_folder), "--out", str(out), "--tokenizer", "medical-bpe",
            "--vocab-size", "300", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert f"{meta['splits']['train']['documents']:,} documents" in printed and str(out) in printed
    assert main(args + ["data.validation_one_in=5"]) == 0
    assert json.loads((out / "meta.json").read_text())["validation_one_in"] == 5
    assert main(["prepare", "--source", str(tmp_path / "nowhere"), "--out", str(out), "-q"]) == 1
    assert "source path not found" in capsys.readouterr().err


def test_failure_while_writing_keeps_the_previous_build_whole(tmp_path, monkeypatch):
    """A full disk (or a kill) while the new token files are written leaves the previous build complete:
    its meta.json and files stay as they were, and no staging file is left behind."""
    import errno
    import os

    from lightbrain.data import prepare as prepare_module

    src = tmp_path / "notes.jsonl"
    src.write_text("\n".join(json.dumps({"text": f"Document {i}: the patient reported symptom {i}."})
                             for i in range(60)) + "\n", encoding="utf-8")
    out = tmp_path / "processed"
    cfg = DataConfig(sources=[str(src)], tokenizer="medical-bpe", bpe_vocab_size=300, out_dir=str(out))
    prepare_data(cfg, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    real = prepare_module.write_token_file

    def disk_full(path, chunks, dtype):
        if "validation" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, chunks, dtype)

    monkeypatch.setattr(prepare_module, "write_token_file", disk_full)
    src.write_text(src.read_text(encoding="utf-8") + json.dumps({"text": "A new document."}) + "\n", encoding="utf-8")
    with pytest.raises(OSError):
        prepare_data(cfg, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_train_repeats_copy_training_documents_only(tmp_path, data_folder, tiktoken_cache):
    """data.train_repeats writes a source's training documents n times, each copy a whole pass of the source
    after the originals (never two copies side by side), and leaves validation and the tokenizer alone."""
    plain = prepare_data(DataConfig(sources=[str(data_folder)], out_dir=str(tmp_path / "plain")), progress=False)
    cfg = DataConfig(sources=[str(data_folder)], out_dir=str(tmp_path / "rep"), train_repeats={"pubmedqa": 3, "jsonl": 2})
    meta = prepare_data(cfg, progress=False)
    once, rep = decoded_splits(tmp_path / "plain"), decoded_splits(tmp_path / "rep")
    assert rep["validation"] == once["validation"]
    assert meta["splits"]["validation"] == plain["splits"]["validation"]
    assert meta["tokenizer_fingerprint"] == plain["tokenizer_fingerprint"]
    assert meta["train_repeats"] == {"pubmedqa": 3, "jsonl": 2} and plain["train_repeats"] == {}
    assert meta["input_hash"] != plain["input_hash"]

    by_type = {s["type"]: s for s in plain["splits"]["train"]["sources"]}
    n_pubmedqa, n_jsonl = by_type["pubmedqa"]["documents"], by_type["jsonl"]["documents"]
    pubmedqa = once["train"][:n_pubmedqa]
    jsonl = once["train"][-n_jsonl:]
    # originals first, then a pass over each repeated source per extra copy
    assert rep["train"] == once["train"] + pubmedqa + jsonl + pubmedqa
    counts = {s["type"]: (s["copies"], s["documents"]) for s in meta["splits"]["train"]["sources"]}
    assert counts == {"pubmedqa": (3, 3 * n_pubmedqa), "medquad": (1, by_type["medquad"]["documents"]),
                      "mts_dialog": (1, by_type["mts_dialog"]["documents"]), "jsonl": (2, 2 * n_jsonl)}
    assert meta["splits"]["train"]["documents"] == len(rep["train"])
    assert meta["splits"]["train"]["bytes"] == sum(len(d.encode("utf-8")) for d in rep["train"])

    with pytest.warns(UserWarning, match="names 'csv', but no source of that type"):
        prepare_data(DataConfig(sources=[str(data_folder)], out_dir=str(tmp_path / "c"), train_repeats={"csv": 2}),
                     progress=False)


def test_per_source_token_counts_map_the_validation_file(tmp_path, data_folder, tiktoken_cache):
    from lightbrain.evaluation.language_modeling import source_segments

    meta = prepare_data(DataConfig(sources=[str(data_folder)], out_dir=str(tmp_path / "out")), progress=False)
    val = decoded_splits(tmp_path / "out")["validation"]
    segments = source_segments(meta["splits"]["validation"])
    # the fixture's MedQuAD file hashes to training, so validation holds the other three sources
    assert [s["name"] for s in segments] == ["pubmedqa", "mts_dialog", "jsonl"]
    assert [s["source"] for s in meta["splits"]["validation"]["sources"]] == [0, 2, 3]
    assert segments[0]["start"] == 0 and segments[-1]["end"] == meta["splits"]["validation"]["tokens"]
    tokens = open_split(tmp_path / "out", "validation").tokens
    tok = load_data_tokenizer(tmp_path / "out")
    docs_seen = 0
    for seg, entry in zip(segments, meta["splits"]["validation"]["sources"]):
        docs = [tok.decode_bytes(d.tolist()).decode("utf-8")
                for d in split_documents(tokens[seg["start"]:seg["end"]], meta["eot_id"])]
        assert docs == val[docs_seen:docs_seen + entry["documents"]]
        assert seg["bytes"] == sum(len(d.encode("utf-8")) for d in docs)
        docs_seen += len(docs)
    assert docs_seen == len(val)


def test_two_sources_of_one_type_are_counted_apart(tmp_path, tiktoken_cache):
    from lightbrain.evaluation.language_modeling import source_segments

    notes = []
    for name, word in (("a.jsonl", "alpha"), ("b.jsonl", "beta")):
        lines = [{"text": f"{word} note {i} on blood pressure."} for i in range(120)]
        (tmp_path / name).write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
        notes.append(str(tmp_path / name))
    meta = prepare_data(DataConfig(sources=notes, out_dir=str(tmp_path / "out"), train_repeats={"jsonl": 2}),
                        progress=False)
    val = meta["splits"]["validation"]["sources"]
    assert [(e["type"], e["source"], e["copies"]) for e in val] == [("jsonl", 0, 1), ("jsonl", 1, 1)]
    assert [s["name"] for s in source_segments(meta["splits"]["validation"])] == ["jsonl #1", "jsonl #2"]
    train = meta["splits"]["train"]["sources"]
    assert [(e["source"], e["copies"]) for e in train] == [(0, 2), (1, 2)]  # each source written twice
    assert source_segments(meta["splits"]["train"]) == []  # copies are spread over the file: no map
