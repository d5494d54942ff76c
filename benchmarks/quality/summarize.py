"""The quality benchmark's tables (Markdown) from the reports `labelgate replay/demo --out` wrote.

.venv/bin/python benchmarks/quality/summarize.py benchmarks/quality/results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ORDER = ("spam-assassin", "reuters", "wnut16")
NONE = "n/a"


def pct(value: float | None, digits: int = 1) -> str:
    return NONE if value is None else f"{100 * value:.{digits}f}%"


def num(value: float | None, digits: int = 3) -> str:
    return NONE if value is None else f"{value:.{digits}f}"


def usd(value: float | None) -> str:
    return NONE if value is None else f"${value:.4f}"


def load(folder: Path) -> list[dict[str, Any]]:
    runs = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
    return sorted(runs, key=lambda run: ORDER.index(run["dataset"]) if run["dataset"] in ORDER else len(ORDER))


def quality_table(runs: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| dataset (task, items) | metric | reviewed | gate (final) | AI-only | random review, same budget "
        "| all-human | auto-accepted accuracy (floor) | ECE raw / calibrated |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        r = run["report"]
        b = r["baselines"]
        metric = r["budget_curve"]["metric"]
        random = b["random_review"]
        targets = r["targets"]
        floor = targets["auto_accepted_floor"]
        ece = r["ece_all_proposed"]
        rows.append(
            f"| {run['dataset']} ({r['task']}, {r['items']:,}) | {metric.replace('_', ' ')} "
            f"| {pct(r['reviewed_share'])} | {num(b['gate']['quality'][metric])} "
            f"| {num(b['ai_only']['quality'][metric])} "
            f"| {num(random['quality'][metric])} ± {num(random['quality_std'][metric])} "
            f"| {num(b['all_human']['quality'][metric])} "
            f"| {pct(targets['auto_accepted_accuracy'])} ({NONE if floor is None else pct(floor, 0)}) "
            f"| {num(ece['raw'])} / {num(ece['calibrated'])} |"
        )
    return rows


def cost_table(runs: list[dict[str, Any]]) -> list[str]:
    price = runs[0]["report"]["baselines"]["price_model"]["description"] if runs else ""
    rows = [
        f"Cost per final label ({price}):",
        "",
        "| dataset | gate | all-human | AI-only | random review | gate saves vs all-human |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        b = run["report"]["baselines"]
        rows.append(
            f"| {run['dataset']} | {usd(b['gate']['cost_per_label_usd'])} "
            f"| {usd(b['all_human']['cost_per_label_usd'])} "
            f"| {usd(b['ai_only']['cost_per_label_usd'])} | {usd(b['random_review']['cost_per_label_usd'])} "
            f"| {pct(b['gate']['savings_vs_all_human'], 0)} |"
        )
    return rows


def curve_table(runs: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| dataset | share reviewed: | 10% | 20% | 30% | 50% | 70% | 90% | above random at every budget |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        curve = run["report"]["budget_curve"]
        at = {
            round(s, 2): (r, m) for s, r, m in zip(curve["shares"], curve["router"], curve["random_mean"], strict=True)
        }
        cells = [f"{num(at[s][0])} vs {num(at[s][1])}" if s in at else NONE for s in (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)]
        missed = curve.get("shares_not_above_random") or []
        verdict = (
            "yes"
            if curve["beats_random_at_every_budget"]
            else f"no (not above at {', '.join(pct(s, 0) for s in missed)})"
        )
        rows.append(
            f"| {run['dataset']} | router vs random ({curve['metric'].replace('_', ' ')}) "
            f"| {' | '.join(cells)} | {verdict} |"
        )
    return rows


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/quality/results")
    runs = load(folder)
    if not runs:
        sys.exit(f"no reports in {folder}")
    print("\n".join([*quality_table(runs), "", *cost_table(runs), "", *curve_table(runs)]))


if __name__ == "__main__":
    main()
