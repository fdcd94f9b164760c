"""Compare tokenizers on held-out medical text: tokens per word, bytes per token, and how medical terms split."""

from __future__ import annotations

from typing import Iterable

# Terms a medical tokenizer should keep in few pieces; a mix of anatomy, drugs, diseases and procedures.
MEDICAL_TERMS = [
    "hypertension", "myocardial infarction", "tachycardia", "metformin", "acetaminophen", "pneumonia",
    "chemotherapy", "osteoarthritis", "hypothyroidism", "cholecystectomy", "electrocardiogram", "dyspnea",
    "hemoglobin", "antibiotics", "carcinoma", "gastroesophageal reflux", "thrombocytopenia", "nephropathy",
]


def text_stats(tokenizer, texts: Iterable[str]) -> dict[str, float]:
    """Tokens per whitespace word and UTF-8 bytes per token over `texts`."""
    texts = list(texts)
    tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
    words = sum(len(t.split()) for t in texts)
    num_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"tokens": tokens, "words": words, "bytes": num_bytes,
            "tokens_per_word": tokens / max(1, words), "bytes_per_token": num_bytes / max(1, tokens)}


def term_splits(tokenizer, terms: Iterable[str] = MEDICAL_TERMS) -> dict[str, list[str]]:
    """How each term splits, as the text of its pieces (a leading space marks a word start, as in running text)."""
    out = {}
    for term in terms:
        ids = tokenizer.encode(" " + term)
        out[term] = [tokenizer.decode_bytes([i]).decode("utf-8", errors="replace") for i in ids]
    return out


def markdown_report(rows: dict[str, dict[str, float]], splits: dict[str, dict[str, list[str]]]) -> str:
    """A markdown table per tokenizer and the pieces of each term."""
    names = list(rows)
    has_bpb = any("val_bpb" in r for r in rows.values())
    header = "| tokenizer | vocab | tokens/word | bytes/token |"
    if has_bpb:  # training columns: what the same budget bought with each tokenizer
        header += " parameters | steps | tokens seen | val bpb |"
    lines = [header, "| --- " * header.count(" |") + "|"]
    for name in names:
        r = rows[name]
        line = f"| {name} | {r['vocab_size']:,} | {r['tokens_per_word']:.3f} | {r['bytes_per_token']:.3f} |"
        if has_bpb:
            line += (f" {r['params'] / 1e6:.2f}M | {r['iters']:,} | {r['tokens_seen'] / 1e6:.2f}M | {r['val_bpb']:.4f} |"
                     if "val_bpb" in r else " - | - | - | - |")
        lines.append(line)
    lines += ["", "| term | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    terms = next(iter(splits.values())).keys() if splits else []
    for term in terms:
        cells = [f"{len(splits[n][term])}: " + "·".join(p.strip() or "␣" for p in splits[n][term]) for n in names]
        lines.append(f"| {term} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
