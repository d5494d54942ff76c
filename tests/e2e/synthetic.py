"""A small synthetic two-class corpus: separable enough that the local model learns it from a few dozen reviews,
noisy enough that some items stay below a high threshold."""

from __future__ import annotations

import json
import random
from pathlib import Path

SPAM_WORDS = [
    "cheap",
    "pills",
    "winner",
    "prize",
    "free",
    "offer",
    "click",
    "unsubscribe",
    "viagra",
    "lottery",
    "cash",
    "bonus",
    "urgent",
]
HAM_WORDS = [
    "meeting",
    "agenda",
    "notes",
    "project",
    "review",
    "schedule",
    "lunch",
    "team",
    "report",
    "draft",
    "budget",
    "quarter",
]
COMMON = ["the", "a", "to", "and", "of", "for", "you", "your", "this", "that", "with", "on", "is"]


def make_items(n: int, seed: int = 1) -> list[dict[str, str]]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        label = "spam" if rng.random() < 0.4 else "ham"
        own, other = (SPAM_WORDS, HAM_WORDS) if label == "spam" else (HAM_WORDS, SPAM_WORDS)
        words = rng.choices(own, k=6) + rng.choices(COMMON, k=6) + rng.choices(other, k=rng.choice([0, 0, 1, 2]))
        rng.shuffle(words)
        items.append({"id": f"syn-{seed}-{i}", "text": " ".join(words), "label": label})
    return items


def write_jsonl(path: Path, items: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path
