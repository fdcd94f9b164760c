"""Readers for the medical text sources: PubMedQA, MedQuAD, MTS-Dialog and generic text files or hub datasets.

Every reader turns its input into `Document`s: the text one training document holds, plus what the split
needs (the group whose members must share a split, and a split fixed by the source itself, if any).
docs/data.md describes each format and how its documents are built.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from lightbrain.data.cleaning import normalise_whitespace


class DataError(ValueError):
    """Bad input data or source settings; the message names the file or record and what to do."""


@dataclass(frozen=True)
class Document:
    text: str
    group: str  # documents with one group share a split (a MedQuAD file); the hash rule reads it
    split: str | None = None  # a split the source fixes (PubMedQA's test items, MTS-Dialog's files)


@dataclass
class SourceSpec:
    """One entry of `data.sources`, normalised: a type plus where to read it."""

    type: str
    path: Path | None = None
    name: str | None = None  # hub dataset name
    config: str | None = None  # hub dataset config
    split: str = "train"  # hub dataset split
    text_field: str = "text"
    unit: str = "file"  # .txt only: "file" (one document per file) or "paragraph" (per blank-line block)
    folders: list[str] | None = None  # MedQuAD only: read just these subfolders of the MedQuAD root
    test_pmids: Path | None = None  # PubMedQA from the hub: where test_ground_truth.json is

    def describe(self) -> dict[str, Any]:
        """What meta.json records about the source (the path as given, or the hub name)."""
        out: dict[str, Any] = {"type": self.type}
        if self.path is not None:
            out["path"] = str(self.path)
            if self.folders:
                out["folders"] = self.folders
        else:
            out["name"] = self.name
            if self.config:
                out["config"] = self.config
            out["split"] = self.split
        return out

    def settings(self) -> dict[str, Any]:
        """Everything that changes the documents, except where the files live (their content is hashed)."""
        return {"type": self.type, "name": self.name, "config": self.config, "split": self.split,
                "text_field": self.text_field, "unit": self.unit, "folders": self.folders}


@dataclass
class LoadedSource:
    spec: SourceSpec
    documents: list[Document]
    sha256: str  # content hash of the inputs (files, or the hub rows' text)
    notes: list[str] = field(default_factory=list)  # things the user should know (e.g. a fallback rule)


# ----------------------------------------------------------------------------------------------------------
# Reading files: bytes once, hashed and decoded with errors that name the file and the byte offset.


def _decode(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not valid UTF-8 at byte offset {exc.start} (byte 0x{data[exc.start]:02x}); "
            "convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8`"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text  # a byte-order mark is not text


class _Hasher:
    """sha256 over (relative path, content) of every file read, in reading order."""

    def __init__(self, root: Path):
        self.root = root
        self._h = hashlib.sha256()

    def read(self, path: Path) -> bytes:
        data = path.read_bytes()
        try:
            rel = path.relative_to(self.root).as_posix() if path != self.root else path.name
        except ValueError:  # a file beside the source (PubMedQA's test split given elsewhere)
            rel = path.name
        self._h.update(rel.encode("utf-8") + b"\0" + hashlib.sha256(data).digest())
        return data

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _text_hash(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(hashlib.sha256(text.encode("utf-8")).digest())
    return h.hexdigest()


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} not found: {path}")
    return path


# ----------------------------------------------------------------------------------------------------------
# PubMedQA

PUBMEDQA_HUB = "qiaojin/PubMedQA"
PUBMEDQA_CONFIGS = ("pqa_labeled", "pqa_artificial", "pqa_unlabeled")
TEST_GROUND_TRUTH = "test_ground_truth.json"


@dataclass
class PubMedQAItem:
    pmid: str
    question: str
    contexts: list[str]
    labels: list[str]
    meshes: list[str]
    long_answer: str
    final_decision: str | None  # yes / no / maybe; None in pqa_unlabeled
    year: str | None  # only the original JSON layout has it


def pubmedqa_document(item: PubMedQAItem) -> str:
    """The question (usually the article title), each labelled context section, then the conclusion.
    The yes/no/maybe decision is left out: it is a label for the benchmark, not part of the abstract."""
    parts = [normalise_whitespace(item.question), ""]
    for label, context in zip(item.labels, item.contexts):
        context = normalise_whitespace(context)
        parts.append(f"{label.strip()}: {context}" if label.strip() else context)
    if item.long_answer.strip():
        parts.append(f"CONCLUSIONS: {normalise_whitespace(item.long_answer)}")
    return "\n".join(parts).strip()


def _items_from_original_json(path: Path, data: Any) -> list[PubMedQAItem]:
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object keyed by PMID (PubMedQA's ori_pqal.json layout)")
    items = []
    for pmid, rec in data.items():
        if not isinstance(rec, dict) or "QUESTION" not in rec or "CONTEXTS" not in rec:
            have = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
            raise DataError(f"{path}: record {pmid!r} lacks QUESTION/CONTEXTS; it has {have}")
        contexts = list(rec["CONTEXTS"])
        items.append(PubMedQAItem(
            pmid=str(pmid), question=rec["QUESTION"], contexts=contexts,
            labels=list(rec.get("LABELS") or [""] * len(contexts)), meshes=list(rec.get("MESHES") or []),
            long_answer=rec.get("LONG_ANSWER") or "", final_decision=rec.get("final_decision"),
            year=rec.get("YEAR"),
        ))
    return items


def _item_from_hub_row(row: dict, where: str) -> PubMedQAItem:
    missing = [k for k in ("pubid", "question", "context") if k not in row]
    if missing:
        raise DataError(f"{where}: lacks {', '.join(missing)}; it has {sorted(row)} "
                        "(expected the hub layout: pubid, question, context{contexts,labels,meshes}, long_answer)")
    ctx = row["context"] or {}
    contexts = list(ctx.get("contexts") or [])
    return PubMedQAItem(
        pmid=str(row["pubid"]), question=row["question"], contexts=contexts,
        labels=list(ctx.get("labels") or [""] * len(contexts)), meshes=list(ctx.get("meshes") or []),
        long_answer=row.get("long_answer") or "", final_decision=row.get("final_decision"), year=None,
    )


def _parquet_rows(path: Path, data: bytes) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading {path} needs pyarrow: pip install 'lightbrain[hf]'") from None
    try:
        return pq.read_table(io.BytesIO(data)).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None


def _pubmedqa_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("ori_pqa*.json")) + sorted(folder.rglob("*.parquet"))
    if not files:
        raise DataError(f"{folder}: no PubMedQA files (expected ori_pqal.json, or the hub's pqa_*/*.parquet files)")
    return files


def _read_pubmedqa_local(path: Path, hasher: _Hasher) -> list[PubMedQAItem]:
    _require(path, "PubMedQA path")
    items: list[PubMedQAItem] = []
    for file in _pubmedqa_files(path) if path.is_dir() else [path]:
        if file.suffix == ".parquet":
            rows = _parquet_rows(file, hasher.read(file))
            items += [_item_from_hub_row(row, f"{file}: row {i}") for i, row in enumerate(rows)]
        elif file.suffix == ".json":
            try:
                data = json.loads(_decode(file, hasher.read(file)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{file}: not valid JSON ({exc})") from None
            items += _items_from_original_json(file, data)
        else:
            raise DataError(f"{file}: not a PubMedQA file (expected ori_pqal.json or a .parquet file)")
    return items


def _load_hub(name: str, config: str | None, split: str):
    try:
        import datasets
    except ImportError:
        raise DataError("loading from the Hugging Face hub needs `datasets`: pip install 'lightbrain[hf]'") from None
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # offline, unknown name, gated dataset, ...
        what = f"{name}" + (f" ({config})" if config else "") + f", split {split!r}"
        raise DataError(
            f"could not load {what} from the Hugging Face hub: {type(exc).__name__}: {exc}\n"
            "Offline? Point LightBrain at local data instead, e.g.\n"
            "  lightbrain prepare --source ../shared/data\n"
            "(a folder with pubmedqa/ori_pqal.json, medquad/ and mts_dialog/; see docs/data.md)"
        ) from None


def _read_pubmedqa_hub(config: str) -> list[PubMedQAItem]:
    if config not in PUBMEDQA_CONFIGS:
        raise DataError(f"unknown PubMedQA config {config!r}; expected one of {', '.join(PUBMEDQA_CONFIGS)}")
    rows = _load_hub(PUBMEDQA_HUB, config, "train")  # the hub has one split per config, "train"
    return [_item_from_hub_row(row, f"{PUBMEDQA_HUB} {config} row {i}") for i, row in enumerate(rows)]


def load_pubmedqa_items(path_or_spec: str | Path | dict | SourceSpec) -> list[PubMedQAItem]:
    """PubMedQA items from a local copy (a folder, ori_pqal.json, or hub-layout parquet files) or the hub.

    `path_or_spec` is a path, "hub" (pqa_labeled from the hub), or a source mapping such as
    {type: pubmedqa, config: pqa_artificial} (hub) / {type: pubmedqa, path: ../shared/data/pubmedqa}."""
    spec = path_or_spec if isinstance(path_or_spec, SourceSpec) else parse_source(path_or_spec)
    if spec.type == "folder":
        spec = next((s for s in expand_folder(spec) if s.type == "pubmedqa"), spec)
    elif spec.type in ("json", "parquet"):  # a single ori_pqal.json or parquet file
        spec = SourceSpec(type="pubmedqa", path=spec.path)
    if spec.type != "pubmedqa":
        raise DataError(f"{path_or_spec!r} is not a PubMedQA source (it reads as {spec.type})")
    if spec.path is None:
        return _read_pubmedqa_hub(spec.config or "pqa_labeled")
    return _read_pubmedqa_local(spec.path, _Hasher(spec.path))


def pubmedqa_test_pmids(folder: str | Path) -> set[str]:
    """The PMIDs of PubMedQA's official 500-item test split, from test_ground_truth.json in `folder`
    (a PubMedQA folder, a folder holding pubmedqa/, or the file itself)."""
    folder = Path(folder)
    for candidate in (folder, folder / TEST_GROUND_TRUTH, folder / "pubmedqa" / TEST_GROUND_TRUTH):
        if candidate.is_file():
            try:
                data = json.loads(_decode(candidate, candidate.read_bytes()))
            except json.JSONDecodeError as exc:
                raise DataError(f"{candidate}: not valid JSON ({exc})") from None
            if not isinstance(data, dict):
                raise DataError(f"{candidate}: expected an object mapping PMID to the final decision")
            return {str(pmid) for pmid in data}
    raise DataError(f"{folder}: no {TEST_GROUND_TRUTH} (PubMedQA's official test split ships with the dataset)")


def _pubmedqa_documents(items: list[PubMedQAItem], test_pmids: set[str] | None) -> list[Document]:
    docs = []
    for item in items:
        text = pubmedqa_document(item)
        if test_pmids is None:  # test split unknown: the generic hash rule on the text
            docs.append(Document(text, group=text))
        else:
            docs.append(Document(text, group=f"pubmedqa:{item.pmid}",
                                 split="validation" if item.pmid in test_pmids else "train"))
    return docs


def _pubmedqa_test_file(spec: SourceSpec) -> Path | None:
    """test_ground_truth.json: as given, else beside a local copy; None when there is none."""
    if spec.test_pmids is not None:
        return _require(spec.test_pmids, "PubMedQA test split file (test_pmids)")
    if spec.path is None:
        return None
    folder = spec.path if spec.path.is_dir() else spec.path.parent
    return folder / TEST_GROUND_TRUTH if (folder / TEST_GROUND_TRUTH).is_file() else None


def _load_pubmedqa(spec: SourceSpec) -> LoadedSource:
    notes = []
    test_file = _pubmedqa_test_file(spec)
    if spec.path is not None:
        hasher = _Hasher(spec.path)
        items = _read_pubmedqa_local(spec.path, hasher)
        if test_file is not None:
            hasher.read(test_file)  # it decides the split, so it is part of the input
        sha = hasher.hexdigest()
    else:
        items = _read_pubmedqa_hub(spec.config or "pqa_labeled")
        sha = None
    test_pmids = pubmedqa_test_pmids(test_file) if test_file is not None else None
    if test_pmids is None:
        notes.append(f"PubMedQA ({spec.describe()}): no {TEST_GROUND_TRUTH} found, so its items are split by the "
                     "hash rule on their text, not by the official test split; give `test_pmids: PATH` to fix")
    docs = _pubmedqa_documents(items, test_pmids)
    if sha is None:  # from the hub: the rows' text, plus the test split file that decides their split
        test_text = [test_file.read_text(encoding="utf-8")] if test_file is not None else []
        sha = _text_hash([d.text for d in docs] + test_text)
    return LoadedSource(spec, docs, sha, notes)


# ----------------------------------------------------------------------------------------------------------
# MedQuAD: one document per answered question-answer pair ("Question\nAnswer"); a whole XML file shares a split.

_BULLET = re.compile(r"[ \t]{2,}- ")  # inline "    - " bullets in the source's layout start a new line


def medquad_pairs(path: Path, data: bytes) -> list[tuple[str, str]]:
    """(question, answer) pairs of one MedQuAD XML file, in either schema; unanswered pairs included."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise DataError(f"{path}: not well-formed XML ({exc})") from None
    pairs = []
    # <Document>/<DiseaseFile> use QAPair/Question/Answer; four NINDS files use pair/question/answer.
    for pair in list(root.iter("QAPair")) + list(root.iter("pair")):
        question = pair.find("Question") if pair.tag == "QAPair" else pair.find("question")
        answer = pair.find("Answer") if pair.tag == "QAPair" else pair.find("answer")
        q = "".join(question.itertext()) if question is not None else ""
        a = "".join(answer.itertext()) if answer is not None else ""
        pairs.append((q, a))
    return pairs


def medquad_document(question: str, answer: str) -> str:
    """"Question\\nAnswer", whitespace normalised; empty when the pair has no answer."""
    answer = normalise_whitespace(_BULLET.sub("\n- ", answer))
    if not answer:
        return ""
    return f"{normalise_whitespace(question)}\n{answer}".strip()


_MEDQUAD_SUBFOLDER = re.compile(r"\d+_\w+_QA(_XML)?")  # 1_CancerGov_QA ... 12_MPlusHerbsSupplements_QA


def medquad_rooted(spec: SourceSpec) -> SourceSpec:
    """A path to one of MedQuAD's numbered subfolders reads as that subfolder of the MedQuAD folder,
    so its files keep the relative paths (and so the splits) they have in a full run."""
    path = spec.path
    if path is not None and spec.folders is None and path.is_dir() and _MEDQUAD_SUBFOLDER.fullmatch(path.name):
        return SourceSpec(type="medquad", path=path.parent, folders=[path.name])
    return spec


def medquad_files(spec: SourceSpec) -> list[Path]:
    root = _require(spec.path, "MedQuAD folder")
    if spec.folders:
        missing = [f for f in spec.folders if not (root / f).is_dir()]
        if missing:
            raise DataError(f"{root}: no MedQuAD subfolder {', '.join(missing)}")
        files = sorted(p for f in spec.folders for p in (root / f).rglob("*.xml"))
    else:
        files = sorted(root.rglob("*.xml"))
    if not files:
        raise DataError(f"{root}: no MedQuAD .xml files found")
    return files


def _load_medquad(spec: SourceSpec, progress: bool = False) -> LoadedSource:
    from tqdm.auto import tqdm

    hasher = _Hasher(spec.path)
    docs = []
    for path in tqdm(medquad_files(spec), desc="MedQuAD", unit="file", disable=not progress, leave=False):
        rel = path.relative_to(spec.path).as_posix()
        for question, answer in medquad_pairs(path, hasher.read(path)):
            text = medquad_document(question, answer)
            if text:
                docs.append(Document(text, group=rel))
    return LoadedSource(spec, docs, hasher.hexdigest())


# ----------------------------------------------------------------------------------------------------------
# MTS-Dialog: one document per row: the dialogue, then the note section written from it.

MTS_COLUMNS = ("section_header", "section_text", "dialogue")


def mts_dialog_document(header: str, section_text: str, dialogue: str) -> str:
    note = normalise_whitespace(section_text)
    return f"Dialogue:\n{normalise_whitespace(dialogue)}\n\nNote ({header.strip()}):\n{note}".strip()


def mts_split(path: Path) -> str | None:
    """MTS-Dialog's own files decide the split: its training file trains, its validation and test files
    validate. Other CSVs in the folder fall back to the hash rule."""
    name = path.name.lower()
    if "training" in name or "train" in name:
        return "train"
    if "validation" in name or "test" in name:
        return "validation"
    return None


def _csv_rows(path: Path, data: bytes) -> list[dict]:
    try:
        return list(csv.DictReader(io.StringIO(_decode(path, data), newline="")))
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None


def _load_mts_dialog(spec: SourceSpec) -> LoadedSource:
    root = _require(spec.path, "MTS-Dialog path")
    files = sorted(root.rglob("*.csv")) if root.is_dir() else [root]
    if not files:
        raise DataError(f"{root}: no MTS-Dialog .csv files found")
    hasher = _Hasher(root)
    docs = []
    for path in files:
        split = mts_split(path)
        for i, row in enumerate(_csv_rows(path, hasher.read(path)), start=1):
            missing = [c for c in MTS_COLUMNS if c not in row]
            if missing:
                raise DataError(f"{path}: row {i} lacks the column(s) {', '.join(missing)}; it has {list(row)} "
                                "(MTS-Dialog CSVs have ID, section_header, section_text, dialogue)")
            text = mts_dialog_document(row["section_header"] or "", row["section_text"] or "", row["dialogue"] or "")
            docs.append(Document(text, group=text, split=split))
    return LoadedSource(spec, docs, hasher.hexdigest())


# ----------------------------------------------------------------------------------------------------------
# Generic text: .txt, .jsonl, .json, .csv, .parquet files and hub datasets. Split by the hash rule on the text.

GENERIC_SUFFIXES = {".txt": "txt", ".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def _field_text(record: Any, field_name: str, where: str) -> str:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with a {field_name!r} field, got {type(record).__name__}")
    if field_name not in record:
        raise DataError(f"{where}: no field {field_name!r}; it has {sorted(record)}. "
                        "Name the text field with `text_field:` in the source")
    value = record[field_name]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field_name!r} is {type(value).__name__}, not text")
    return value


def generic_texts(path: Path, kind: str, data: bytes, text_field: str, unit: str) -> list[str]:
    """The texts of one generic file (`kind` is txt, jsonl, json, csv or parquet)."""
    if kind == "txt":
        text = _decode(path, data)
        if unit == "paragraph":  # blocks separated by one or more blank lines
            return [block for block in re.split(r"\n\s*\n", text) if block.strip()]
        return [text]
    if kind == "jsonl":
        texts = []
        # split on "\n" only: str.splitlines also breaks at U+2028 and friends, which JSON strings may hold
        for n, line in enumerate(_decode(path, data).split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {n} is not valid JSON ({exc.msg})") from None
            texts.append(_field_text(record, text_field, f"{path}: record {n} (line {n})"))
        return texts
    if kind == "json":
        try:
            records = json.loads(_decode(path, data))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(records, dict):  # an object keyed by id
            return [_field_text(r, text_field, f"{path}: record {k!r}") for k, r in records.items()]
        if not isinstance(records, list):
            raise DataError(f"{path}: expected a list of objects with a {text_field!r} field")
        return [_field_text(r, text_field, f"{path}: record {i}") for i, r in enumerate(records, start=1)]
    if kind == "csv":
        rows = _csv_rows(path, data)
        return [_field_text(r, text_field, f"{path}: row {i} (column names: header line)")
                for i, r in enumerate(rows, start=1)]
    if kind == "parquet":
        rows = _parquet_rows(path, data)
        return [_field_text(r, text_field, f"{path}: row {i}") for i, r in enumerate(rows, start=1)]
    raise DataError(f"{path}: unknown format {kind!r}")


def generic_files(spec: SourceSpec) -> list[tuple[Path, str]]:
    root = _require(spec.path, "source path")
    if root.is_file():
        kind = spec.type if spec.type in GENERIC_SUFFIXES.values() else GENERIC_SUFFIXES.get(root.suffix.lower())
        if kind is None:
            raise DataError(f"{root}: unknown format {root.suffix or '(no suffix)'!r}; supported: "
                            f"{', '.join(GENERIC_SUFFIXES)} files, or give `type:` in the source (see docs/data.md)")
        return [(root, kind)]
    files = [(p, GENERIC_SUFFIXES[p.suffix.lower()]) for p in sorted(root.rglob("*"))
             if p.is_file() and p.suffix.lower() in GENERIC_SUFFIXES and not p.name.startswith(".")]
    if spec.type in GENERIC_SUFFIXES.values():
        files = [(p, k) for p, k in files if k == spec.type]
    if not files:
        raise DataError(f"{root}: no {spec.type if spec.type != 'folder' else 'text'} files found "
                        f"(supported: {', '.join(GENERIC_SUFFIXES)})")
    return files


def _load_generic(spec: SourceSpec) -> LoadedSource:
    root = spec.path
    files = generic_files(spec)
    hasher = _Hasher(root)
    docs = []
    for path, kind in files:
        for text in generic_texts(path, kind, hasher.read(path), spec.text_field, spec.unit):
            text = normalise_whitespace(text)
            docs.append(Document(text, group=text))
    return LoadedSource(spec, docs, hasher.hexdigest())


def _load_hub_texts(spec: SourceSpec) -> LoadedSource:
    rows = _load_hub(spec.name, spec.config, spec.split)
    docs = []
    for i, row in enumerate(rows):
        text = normalise_whitespace(_field_text(row, spec.text_field, f"{spec.name} {spec.split} record {i}"))
        docs.append(Document(text, group=text))
    return LoadedSource(spec, docs, _text_hash(d.text for d in docs))


# ----------------------------------------------------------------------------------------------------------
# Source specs: parsing `data.sources` entries and detecting what a local folder holds.

SOURCE_TYPES = ("pubmedqa", "medquad", "mts_dialog", "txt", "jsonl", "json", "csv", "parquet", "hub", "folder")
_SPEC_KEYS = {"type", "path", "name", "config", "split", "text_field", "unit", "folders", "test_pmids"}


def parse_source(entry: str | Path | dict) -> SourceSpec:
    """One `data.sources` entry -> SourceSpec. A string is "hub" (PubMedQA pqa_labeled from the hub) or a path."""
    if isinstance(entry, (str, Path)):
        if str(entry) == "hub":
            return SourceSpec(type="pubmedqa", config="pqa_labeled")
        return _typed_by_suffix(SourceSpec(type="folder" if Path(entry).is_dir() else "file", path=Path(entry)))
    if not isinstance(entry, dict):
        raise DataError(f"a data source must be a path, 'hub', or a mapping with a type; got {entry!r}")
    unknown = set(entry) - _SPEC_KEYS
    if unknown:
        raise DataError(f"data source {entry!r}: unknown key(s) {', '.join(sorted(unknown))}; "
                        f"known keys: {', '.join(sorted(_SPEC_KEYS))}")
    kind = entry.get("type") or ("hub" if "name" in entry else "folder" if "path" in entry else None)
    if kind not in SOURCE_TYPES:
        raise DataError(f"data source {entry!r}: unknown type {kind!r}; expected one of {', '.join(SOURCE_TYPES)}")
    if entry.get("unit", "file") not in ("file", "paragraph"):
        raise DataError(f"data source {entry!r}: unit must be 'file' or 'paragraph'")
    path = Path(entry["path"]) if entry.get("path") is not None else None
    name = entry.get("name")
    if kind == "hub" and name in (PUBMEDQA_HUB, "pubmed_qa"):
        kind, name = "pubmedqa", None  # PubMedQA from the hub gets its structured documents
    if kind == "hub" and not name:
        raise DataError(f"data source {entry!r}: a hub source needs `name:` (a dataset on the Hugging Face hub)")
    if kind not in ("hub", "pubmedqa") and path is None:
        raise DataError(f"data source {entry!r}: needs `path:`")
    spec = SourceSpec(
        type=kind, path=path, name=name, config=entry.get("config"), split=entry.get("split", "train"),
        text_field=entry.get("text_field", "text"), unit=entry.get("unit", "file"),
        folders=list(entry["folders"]) if entry.get("folders") else None,
        test_pmids=Path(entry["test_pmids"]) if entry.get("test_pmids") else None,
    )
    if kind == "pubmedqa" and path is None:
        spec.name = PUBMEDQA_HUB
        spec.config = spec.config or "pqa_labeled"
    if kind == "folder" and path.is_file():
        spec.type = "file"
    if kind == "medquad":
        return medquad_rooted(spec)
    return _typed_by_suffix(spec) if spec.type in ("folder", "file") else spec


def _typed_by_suffix(spec: SourceSpec) -> SourceSpec:
    """A bare path: a file gets its type from its suffix; a folder stays "folder" (see `expand_folder`)."""
    _require(spec.path, "source path")
    if spec.type == "file":
        kind = GENERIC_SUFFIXES.get(spec.path.suffix.lower())
        if kind is None:
            raise DataError(f"{spec.path}: unknown format {spec.path.suffix or '(no suffix)'!r}; supported: "
                            f"{', '.join(GENERIC_SUFFIXES)} files, or a folder (see docs/data.md)")
        spec.type = kind
    return spec

KNOWN_SUBFOLDERS = {"pubmedqa": "pubmedqa", "medquad": "medquad", "mts_dialog": "mts_dialog"}


def expand_folder(spec: SourceSpec) -> list[SourceSpec]:
    """What a local folder holds: pubmedqa/, medquad/, mts_dialog/ subfolders (plus text files at its top
    level), a single dataset of one of those kinds, or else generic text files anywhere below it."""
    root = spec.path
    found = [SourceSpec(type=kind, path=root / sub) for sub, kind in KNOWN_SUBFOLDERS.items() if (root / sub).is_dir()]
    if found:
        top = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in GENERIC_SUFFIXES)
        extra = [SourceSpec(type=GENERIC_SUFFIXES[p.suffix.lower()], path=p, text_field=spec.text_field,
                            unit=spec.unit) for p in top]
        return found + extra
    if any(root.glob("ori_pqa*.json")) or any(root.glob("pqa_*/*.parquet")):
        return [SourceSpec(type="pubmedqa", path=root)]
    if any(root.glob("*/*.xml")) or any(root.glob("*.xml")):
        return [medquad_rooted(SourceSpec(type="medquad", path=root))]
    if any(mts_split(p) for p in root.rglob("MTS-Dialog*.csv")):
        return [SourceSpec(type="mts_dialog", path=root)]
    return [spec]


def expand_sources(entries: list) -> list[SourceSpec]:
    specs = []
    for entry in entries:
        spec = entry if isinstance(entry, SourceSpec) else parse_source(entry)
        specs += expand_folder(spec) if spec.type == "folder" else [spec]
    return specs


def load_source(spec: SourceSpec, progress: bool = False) -> LoadedSource:
    """A source's documents and content hash (`progress` shows a bar over MedQuAD's many files)."""
    if spec.type == "pubmedqa":
        return _load_pubmedqa(spec)
    if spec.type == "medquad":
        return _load_medquad(spec, progress)
    if spec.type == "mts_dialog":
        return _load_mts_dialog(spec)
    if spec.type == "hub":
        return _load_hub_texts(spec)
    return _load_generic(spec)


def source_sha256(spec: SourceSpec) -> str:
    """The content hash `load_source` would report, from the files alone when they are local
    (hub datasets are opened from their local cache and their text hashed)."""
    if spec.type == "hub" or (spec.type == "pubmedqa" and spec.path is None):
        return load_source(spec).sha256
    hasher = _Hasher(spec.path)
    if spec.type == "pubmedqa":
        files = _pubmedqa_files(spec.path) if spec.path.is_dir() else [_require(spec.path, "PubMedQA path")]
        files += [f for f in [_pubmedqa_test_file(spec)] if f is not None]
    elif spec.type == "medquad":
        files = medquad_files(spec)
    elif spec.type == "mts_dialog":
        files = sorted(spec.path.rglob("*.csv")) if spec.path.is_dir() else [_require(spec.path, "MTS-Dialog path")]
    else:
        files = [p for p, _ in generic_files(spec)]
    for path in files:
        hasher.read(path)
    return hasher.hexdigest()
