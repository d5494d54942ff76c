"""How well the local model's confidence ranks right above wrong, per classifier, on SpamAssassin.

The router auto-accepts from the top of the confidence ranking, so what matters is not accuracy but coverage:
the largest share of items, taken from the most confident down, whose labels are still right at a given
precision. Each repetition trains the labeler's own model (``labelgate_labeler.model.train``) on N random
emails and scores the rest, once per classifier on the same split.

    .venv/bin/python benchmarks/quality/classifier.py              # N = 300 and 600, 5 splits each
    .venv/bin/python benchmarks/quality/classifier.py --sizes 600 --reps 3
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from labelgate_core.events import TaskType
from labelgate_labeler.model import Classifier, ModelConfig, train


def coverage(confidence: list[float], right: list[bool], precision: float) -> float:
    """The largest share of items, most confident first, whose accuracy is at least ``precision``."""
    order = np.argsort(-np.asarray(confidence), kind="stable")
    running = np.cumsum(np.asarray(right, dtype=float)[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(running >= precision)
    return float((ok.max() + 1) / len(order)) if ok.size else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(".cache/datasets/spam-assassin.jsonl"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 600])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--precision", type=float, default=0.995)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    texts = [str(r["text"]) for r in rows]
    labels = [str(r["label"]) for r in rows]
    rng = random.Random(0)
    results: dict[tuple[int, Classifier], list[tuple[float, float]]] = {}
    for size in args.sizes:
        for rep in range(args.reps):
            order = list(range(len(rows)))
            rng.shuffle(order)
            seen, unseen = order[:size], order[size:]
            for classifier in Classifier:
                started = time.perf_counter()
                model = train([texts[i] for i in seen], [(labels[i],) for i in seen], TaskType.classification,
                              config=ModelConfig(classifier=classifier))
                predictions = model.predict_many([texts[i] for i in unseen])
                right = [p.labels == (labels[i],) for p, i in zip(predictions, unseen, strict=True)]
                confidence = [p.confidence or 0.0 for p in predictions]
                point = (sum(right) / len(right), coverage(confidence, right, args.precision))
                results.setdefault((size, classifier), []).append(point)
                print(f"N={size} split {rep + 1}/{args.reps} {classifier.value:8s} accuracy {point[0]:.4f} "
                      f"coverage {point[1]:.3f} ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
    print(f"| trained on | classifier | accuracy (median) | auto-acceptable at {args.precision:.1%} precision "
          "(median, min-max) |")
    print("|---:|---|---:|---:|")
    for (size, classifier), points in results.items():
        covered = [c for _, c in points]
        print(f"| {size} | {classifier.value} | {statistics.median(a for a, _ in points):.4f} | "
              f"{statistics.median(covered):.3f} ({min(covered):.3f}-{max(covered):.3f}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
