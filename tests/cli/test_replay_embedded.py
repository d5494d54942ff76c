"""`labelgate replay` end to end on the embedded pipeline it starts (SQLite, in-process bus, local models): a
small multi-label dataset and a small entity dataset, the gold answers playing the reviewers, and the report,
baselines, budget curve and plot it writes."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labelgate.cli import app

pytestmark = [pytest.mark.e2e]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

TOPIC_WORDS = {
    "corn": ["maize", "corn", "bushels", "ethanol", "silage"],
    "grain": ["wheat", "grain", "barley", "harvest", "elevator"],
    None: ["bank", "shares", "profit", "merger", "dividend", "oil", "tariff"],
}


def multi_label_lines(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        labels = rng.choice([[], [], ["grain"], ["corn", "grain"], ["corn"]])
        words = rng.choices(TOPIC_WORDS[None], k=5)
        for label in labels:
            words += rng.choices(TOPIC_WORDS[label], k=3)
        rng.shuffle(words)
        lines.append({"id": f"doc-{i}", "text": " ".join(words) + f" #{i}", "labels": labels})
    return lines


PEOPLE = ["Alice Moreau", "Bob", "Chen Wei", "Dana", "Erik Larsen"]
PLACES = ["Paris", "Lagos", "New York", "Oslo", "Lima"]


def entity_lines(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        shape = i % 3
        if shape == 0:
            text = f"{person} flew to {place} today"
            spans = [(0, len(person), "person"), (len(person) + 8, len(person) + 8 + len(place), "geo-loc")]
        elif shape == 1:
            text = f"lovely weather in {place} #{i}"
            spans = [(18, 18 + len(place), "geo-loc")]
        else:
            text = f"nothing to see here #{i}"
            spans = []
        lines.append(
            {"id": f"tweet-{i}", "text": text, "spans": [{"start": s, "end": e, "label": t} for s, e, t in spans]}
        )
    return lines


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def run_replay(args: list[str]) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["replay", *args, "--json", "--batch", "50", "--seeds", "5"])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def check_outputs(out: Path, name: str, report: dict[str, Any]) -> None:
    written = json.loads((out / f"{name}.json").read_text())
    assert written["report"]["items"] == report["items"]
    assert (out / f"{name}-budget.png").read_bytes().startswith(PNG_MAGIC)


def check_baselines(report: dict[str, Any], metric: str) -> None:
    compared = report["baselines"]
    n = report["items"]
    # Reviewers answer with gold: all-human is perfect and costs 30 s at $30/h per item.
    assert compared["all_human"]["quality"][metric] == 1.0
    assert compared["all_human"]["cost_per_label_usd"] == pytest.approx(0.25)
    assert compared["ai_only"]["cost_per_label_usd"] == 0.0
    assert compared["gate"]["reviews"] == report["reviews"]
    assert compared["gate"]["cost_per_label_usd"] == pytest.approx(report["reviews"] * 0.25 / n, abs=1e-4)
    assert compared["random_review"]["reviewed"] == compared["gate"]["reviewed"]
    curve = report["budget_curve"]
    assert curve["metric"] == metric
    assert len(curve["shares"]) == len(curve["router"]) == len(curve["random_mean"]) == 21
    assert curve["router"][-1] == curve["random_mean"][-1] == 1.0
    # With nothing reviewed both orders leave the AI's labels (summed in another order: equal up to rounding).
    assert curve["router"][0] == pytest.approx(report["quality"]["ai_only"][metric])
    assert curve["random_mean"][0] == pytest.approx(report["quality"]["ai_only"][metric])
    assert report["targets"]["metric"] == metric


def test_multi_label_replay_reports_f1_and_the_baselines(tmp_path: Path) -> None:
    lines = multi_label_lines(150, seed=3)
    data = write(tmp_path / "topics.jsonl", lines)
    out = tmp_path / "out"

    report = run_replay([str(data), "--task", "multi_label", "--out", str(out)])

    assert report["task"] == "multi_label"
    assert report["items"] == 150
    final = report["quality"]["final"]
    assert set(final) == {"accuracy", "micro_precision", "micro_recall", "micro_f1", "macro_f1"}
    # Everything a person reviewed is right, so the final labels are at least as good as the AI's alone.
    assert final["micro_f1"] >= report["quality"]["ai_only"]["micro_f1"]
    assert report["reviewed_share"] > 0
    if report["reviewed_share"] == 1.0:
        assert final["accuracy"] == 1.0
    check_baselines(report, "micro_f1")
    check_outputs(out, "topics", report)


def test_entity_replay_reviews_with_gold_spans_and_reports_span_f1(tmp_path: Path) -> None:
    lines = entity_lines(120, seed=5)
    data = write(tmp_path / "tweets.jsonl", lines)
    out = tmp_path / "out"

    report = run_replay([str(data), "--task", "entities", "--out", str(out)])

    assert report["task"] == "entities"
    assert report["items"] == 120
    for part in ("final", "auto_accepted", "ai_only"):
        assert {"span_precision", "span_recall", "span_f1"} <= set(report["quality"][part])
    # The first items are reviewed before any model exists, with the gold spans: those reach the final labels.
    assert report["reviewed_share"] > 0
    assert report["quality"]["final"]["span_f1"] > 0
    assert report["quality"]["final"]["span_f1"] >= (report["quality"]["ai_only"]["span_f1"] or 0.0)
    if report["reviewed_share"] == 1.0:
        assert report["quality"]["final"]["span_f1"] == 1.0
    check_baselines(report, "span_f1")
    check_outputs(out, "tweets", report)


def test_replay_needs_a_file_or_a_known_dataset(tmp_path: Path) -> None:
    runner = CliRunner()

    neither = runner.invoke(app, ["replay"])
    unknown = runner.invoke(app, ["replay", "--dataset", "imagenet"])
    missing = runner.invoke(app, ["replay", "--dataset", "wnut16", "--cache", str(tmp_path)])

    assert neither.exit_code == 2
    assert "FILE or --dataset" in neither.output
    assert unknown.exit_code == 2
    assert "wnut16" in unknown.output
    assert missing.exit_code == 2
    assert "make data-wnut16" in missing.output
