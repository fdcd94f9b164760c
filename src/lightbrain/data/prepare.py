"""`lightbrain prepare`: read the sources, clean, remove duplicates, split, tokenize, write token files.

Output in `data.out_dir`: train.bin and validation.bin (see token_files.py), tokenizer.json for the medical
BPE, and meta.json, written last, so a set without meta.json is never mistaken for a finished one. New
files are built under staging names and swapped in only when all are complete, so a failed or killed
run leaves the previous build intact.
A re-run with the same inputs (content hashes) and settings finds meta.json's input_hash unchanged and
does nothing unless forced.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lightbrain.config import DataConfig
from lightbrain.data.cleaning import drop_duplicates
from lightbrain.data.sources import DataError, Document, LoadedSource, SourceSpec, expand_sources, load_source, source_sha256
from lightbrain.data.split import SPLIT_RULE, SPLITS, split_corpus, split_of
from lightbrain.data.token_files import FORMAT_VERSION, META_FILE, token_dtype, write_meta, write_token_file
from lightbrain.data.tokenizers import GPT2Tokenizer, MedicalBPETokenizer, default_num_threads, train_medical_bpe

TOKENIZER_FILE = "tokenizer.json"
# Bump when the way documents are built or split changes, so old outputs are rebuilt.
RECIPE_VERSION = 1
ENCODE_BATCH = 512  # documents per tokenizer call: big enough for threads to pay off, small for the progress bar


def _is_hub(spec: SourceSpec) -> bool:
    return spec.path is None


def input_hash(data_config: DataConfig, specs: list[SourceSpec], sha256s: list[str]) -> str:
    """A hash of everything the output depends on: the inputs' content and the settings that shape it."""
    recipe = {
        "format_version": FORMAT_VERSION,
        "recipe_version": RECIPE_VERSION,
        "tokenizer": data_config.tokenizer,
        "bpe_vocab_size": data_config.bpe_vocab_size if data_config.tokenizer == "medical-bpe" else None,
        "validation_one_in": data_config.validation_one_in,
        "sources": [dict(spec.settings(), sha256=sha) for spec, sha in zip(specs, sha256s)],
    }
    if data_config.train_repeats:  # absent when unset, so builds made before the option keep their hash
        recipe["train_repeats"] = dict(sorted(data_config.train_repeats.items()))
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode("utf-8")).hexdigest()


def _up_to_date(out_dir: Path, expected_hash: str) -> dict[str, Any] | None:
    """The existing meta.json when it was written for the same inputs and its files are all there."""
    try:
        meta = json.loads((out_dir / META_FILE).read_text(encoding="utf-8"))
        if meta.get("input_hash") != expected_hash:
            return None
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split in SPLITS:
            if (out_dir / f"{split}.bin").stat().st_size != meta["splits"][split]["tokens"] * itemsize:
                return None
        if meta["tokenizer"].get("file") and not (out_dir / meta["tokenizer"]["file"]).is_file():
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _clean_corpus(loaded: list[LoadedSource]) -> tuple[list[Document], list[int]]:
    """All sources' documents with empty texts and exact duplicates (across sources too) removed.
    Returns the documents and how many each source kept."""
    seen: set[str] = set()
    documents, kept = [], []
    for source in loaded:
        nonempty = [d for d in source.documents if d.text]
        where = source.spec.describe()
        if not nonempty:
            raise DataError(f"source {where} holds no text after cleaning ({len(source.documents)} records, "
                            "all empty); check the path and the text field")
        unique = drop_duplicates(nonempty, seen)
        if not unique:
            raise DataError(f"source {where}: all {len(nonempty)} documents are exact duplicates of documents "
                            "from the sources before it (is the same data listed twice?)")
        documents += unique
        kept.append(len(unique))
    total = sum(len([d for d in s.documents if d.text]) for s in loaded)
    if len(documents) == 1 and total > 1:
        raise DataError(f"the corpus is all duplicates: its {total} documents are one text repeated; "
                        "check the text field and the inputs")
    return documents, kept


def _encode_chunks(tokenizer, texts: list[str], num_threads: int, desc: str, progress: bool) -> Iterator[np.ndarray]:
    """Each document's ids followed by the end-of-text token, in batches, with a progress bar."""
    from tqdm.auto import tqdm

    dtype = token_dtype(tokenizer.vocab_size)
    eot = [tokenizer.eot_id]
    with tqdm(total=len(texts), desc=desc, unit="doc", disable=not progress, leave=False) as bar:
        for start in range(0, len(texts), ENCODE_BATCH):
            batch = tokenizer.encode_batch(texts[start:start + ENCODE_BATCH], num_threads=num_threads)
            count = sum(len(ids) + 1 for ids in batch)
            yield np.fromiter(itertools.chain.from_iterable(ids + eot for ids in batch), dtype=np.int64,
                              count=count).astype(dtype) if count else np.zeros(0, dtype)
            bar.update(len(batch))


def _check_repeats(train_repeats: dict[str, int], loaded: list[LoadedSource]) -> None:
    present = {s.spec.type for s in loaded}
    for kind in train_repeats:
        if kind not in present:
            warnings.warn(f"data.train_repeats names {kind!r}, but no source of that type is being prepared "
                          f"(the sources are: {', '.join(sorted(present))}); that entry changes nothing", stacklevel=3)


def make_tokenizer(data_config: DataConfig, train_texts: list[str], progress: bool):
    if data_config.tokenizer == "gpt2":
        return GPT2Tokenizer()
    return train_medical_bpe(train_texts, data_config.bpe_vocab_size, show_progress=progress)


Segment = tuple[int, str, list[str]]  # (source index, source type, texts): a run of one source's documents


def split_segments(loaded: list[LoadedSource], kept_documents: list[Document], kept: list[int],
                   validation_one_in: int, train_repeats: dict[str, int]) -> dict[str, list[Segment]]:
    """Each split file's contents as runs of one source's documents, in file order. The training file
    holds every source once, then the extra copies `train_repeats` asks for, a whole pass of a source
    at a time, so copies of one document never share a window. Validation is never repeated."""
    segments: dict[str, list[Segment]] = {name: [] for name in SPLITS}
    start = 0
    for index, (source, n) in enumerate(zip(loaded, kept)):
        docs = kept_documents[start:start + n]
        start += n
        for name in SPLITS:
            texts = [d.text for d in docs if split_of(d, validation_one_in) == name]
            if texts:
                segments[name].append((index, source.spec.type, texts))
    extra_passes = max(train_repeats.values(), default=1) - 1
    originals = list(segments["train"])
    for copy in range(1, extra_passes + 1):
        segments["train"] += [seg for seg in originals if train_repeats.get(seg[1], 1) > copy]
    return segments


def write_splits(out_dir: Path, tokenizer, segments: dict[str, list[Segment]], num_threads: int,
                 progress: bool, staged: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Tokenize each split into a staging file (recorded in `staged` under its final name); returns
    documents/tokens/bytes per split, and per source (`sources`: in file order of first appearance, with
    `source`, the index in meta.json's sources, `copies` of each document, and the counts summed over them)."""
    stats = {}
    dtype = token_dtype(tokenizer.vocab_size)
    for split in SPLITS:
        per_source: dict[int, dict[str, Any]] = {}

        def chunks():
            for index, kind, texts in segments[split]:
                entry = per_source.setdefault(index, {"type": kind, "source": index, "documents": 0, "tokens": 0,
                                                      "bytes": 0, "copies": 0})
                entry["copies"] += 1
                entry["documents"] += len(texts)
                entry["bytes"] += sum(len(t.encode("utf-8")) for t in texts)
                for chunk in _encode_chunks(tokenizer, texts, num_threads, f"tokenize {split} ({kind})", progress):
                    entry["tokens"] += len(chunk)
                    yield chunk

        staged[f"{split}.bin"] = out_dir / f".{split}.bin.staging"
        tokens = write_token_file(staged[f"{split}.bin"], chunks(), dtype)
        stats[split] = {"documents": sum(e["documents"] for e in per_source.values()), "tokens": tokens,
                        "bytes": sum(e["bytes"] for e in per_source.values()),
                        "sources": list(per_source.values())}
    return stats


def prepare_data(data_config: DataConfig, progress: bool = True) -> dict[str, Any]:
    """Build the token files in `data_config.out_dir` and return their meta.json (see docs/data.md)."""
    data_config.validate()
    out_dir = Path(data_config.out_dir)
    specs = expand_sources(list(data_config.sources))
    # Hub datasets are hashed by reading their rows, so keep what was read for the build itself.
    hub_loaded = {i: load_source(s) for i, s in enumerate(specs) if _is_hub(s)}
    shas = [hub_loaded[i].sha256 if i in hub_loaded else source_sha256(s) for i, s in enumerate(specs)]
    expected = input_hash(data_config, specs, shas)
    if not data_config.force:
        meta = _up_to_date(out_dir, expected)
        if meta is not None:
            if progress:
                print(f"{out_dir} is up to date with its inputs and settings: nothing to do (force rebuilds)",
                      file=sys.stderr)
            return meta

    loaded = [hub_loaded.get(i) or load_source(s, progress) for i, s in enumerate(specs)]
    for source in loaded:
        for note in source.notes:
            warnings.warn(note, stacklevel=2)
    documents, kept = _clean_corpus(loaded)
    splits = split_corpus(documents, data_config.validation_one_in)
    _check_repeats(data_config.train_repeats, loaded)
    segments = split_segments(loaded, documents, kept, data_config.validation_one_in, data_config.train_repeats)

    num_threads = data_config.num_workers or default_num_threads()
    if data_config.tokenizer == "medical-bpe":
        os.environ.setdefault("RAYON_RS_NUM_THREADS", str(num_threads))  # HF tokenizers' own thread pool
    tokenizer = make_tokenizer(data_config, [d.text for d in splits["train"]], progress)

    # Build every new file under a staging name first; the previous build (if any) stays complete and
    # usable until the new one is whole. Only then is its meta.json removed, the files renamed into
    # place, and the new meta.json written last, so a crash or full disk never loses the old data.
    out_dir.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path] = {}
    try:
        if isinstance(tokenizer, MedicalBPETokenizer):
            staged[TOKENIZER_FILE] = out_dir / f".{TOKENIZER_FILE}.staging"
            tokenizer.save(staged[TOKENIZER_FILE])
            tokenizer_entry = {"name": tokenizer.name, "file": TOKENIZER_FILE}
        else:
            tokenizer_entry = {"name": tokenizer.name}
        stats = write_splits(out_dir, tokenizer, segments, num_threads, progress, staged)
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise
    (out_dir / META_FILE).unlink(missing_ok=True)
    if TOKENIZER_FILE not in staged:
        (out_dir / TOKENIZER_FILE).unlink(missing_ok=True)  # a stale medical BPE would mislead readers
    for name, path in staged.items():
        os.replace(path, out_dir / name)

    meta = {
        "format_version": FORMAT_VERSION,
        "tokenizer": tokenizer_entry,
        "tokenizer_fingerprint": tokenizer.fingerprint(),
        "vocab_size": tokenizer.vocab_size,
        "dtype": token_dtype(tokenizer.vocab_size).name,
        "eot_id": tokenizer.eot_id,
        "splits": stats,
        "sources": [dict(s.spec.describe(), documents=n, sha256=s.sha256) for s, n in zip(loaded, kept)],
        "split_rule": SPLIT_RULE,
        "validation_one_in": data_config.validation_one_in,
        "train_repeats": dict(data_config.train_repeats),
        "input_hash": input_hash(data_config, specs, [s.sha256 for s in loaded]),
    }
    write_meta(out_dir, meta)
    return meta
