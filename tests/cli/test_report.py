"""``labelgate report`` end to end: a real embedded pipeline (uvicorn on a free port), items reviewed by people,
a model trained from them, and the command that writes the HTML page."""

from __future__ import annotations

import asyncio
import base64
import random
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from labelgate.cli import app
from labelgate.embedded import build_pipeline, embedded_settings, serve_in_background
from labelgate.report import SECTIONS, ReportError, build_report
from labelgate_client import LabelgateClient
from labelgate_labeler.settings import LabelerSettings

pytestmark = [pytest.mark.e2e]

PROJECT = "inbox"
WORDS = {
    "spam": ["cheap", "pills", "winner", "prize", "free", "offer", "click", "lottery", "cash", "bonus"],
    "ham": ["meeting", "agenda", "notes", "project", "schedule", "lunch", "team", "report", "draft", "budget"],
}


def corpus(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = "spam" if i % 2 else "ham"
        other = "ham" if label == "spam" else "spam"
        words = rng.choices(WORDS[label], k=6) + rng.choices(WORDS[other], k=rng.randint(0, 3))
        rng.shuffle(words)
        out.append((" ".join(words) + f" #{seed}-{i}", label))
    return out


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    labeler = LabelerSettings(retrain_every_reviews=20, retrain_interval_s=1, min_train_examples=20)
    pipeline = build_pipeline(embedded_settings(tmp_path / "data"), labeler)
    async with serve_in_background(pipeline.app) as base_url:
        yield base_url


async def settle(client: LabelgateClient) -> None:
    deadline = time.monotonic() + 60
    while (await client.stats(PROJECT)).submitted:
        assert time.monotonic() < deadline, "items still undecided"
        await asyncio.sleep(0.05)


async def review_all(client: LabelgateClient, gold: dict[str, str]) -> None:
    while (task := await client.lease(PROJECT, reviewer_id="rita")) is not None:
        await client.review(PROJECT, task.task_id, task.lease_token, "rita", [gold[task.item_id]], duration_s=12.0)


async def submit(client: LabelgateClient, items: list[tuple[str, str]], gold: dict[str, str]) -> None:
    result = await client.submit_items(PROJECT, [{"text": text, "idempotency_key": text} for text, _ in items])
    gold |= {entry.item_id: items[i][1] for i, entry in enumerate(result.items)}


async def models(url: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get(f"/v1/projects/{PROJECT}/models")
    return list(response.json()) if response.status_code == 200 else []


@pytest.fixture
async def reviewed_project(url: str) -> str:
    """Cold start (everything reviewed), a trained model, then a second batch partly auto-accepted and audited."""
    async with LabelgateClient(url) as client:
        await client.create_project(PROJECT, name="Inbox", labels=["spam", "ham"], threshold=0.8, audit_rate=0.3)
        async with httpx.AsyncClient(base_url=url) as http:
            patched = await http.patch(f"/v1/projects/{PROJECT}", json={"data_owner": "ACME", "license": "MIT"})
            assert patched.status_code == 200, patched.text
        gold: dict[str, str] = {}
        await submit(client, corpus(60, seed=1), gold)
        await settle(client)
        await review_all(client, gold)
        deadline = time.monotonic() + 60
        while not any(m.get("holdout_accuracy") is not None for m in await models(url)):
            assert time.monotonic() < deadline, "the labeler never trained on the 60 reviews"
            await asyncio.sleep(0.1)
        await submit(client, corpus(80, seed=2), gold)
        await settle(client)
        await review_all(client, gold)
    return url


def images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


async def test_the_report_command_writes_every_section_with_embedded_plots(
    reviewed_project: str, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"

    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["report", PROJECT, "--url", reviewed_project, "--out", str(out), "--hourly-rate", "36"],
    )

    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    for anchor, title in SECTIONS:
        assert f'<section id="{anchor}"><h2>{title}</h2>' in page
    pngs = images(page)
    # accuracy vs share reviewed, reliability raw and calibrated, learning curve, confusion, cost
    assert len(pngs) == 6
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in pngs)
    assert "<dd>ACME</dd>" in page
    assert "<dd>MIT</dd>" in page
    assert "140 (140 final:" in page
    assert "Cohen&#x27;s kappa" in page
    assert "no item was reviewed by two or more people" in page
    assert "$36.00 per hour" in page
    assert "http://" not in page.split("<body>", 1)[1].replace(reviewed_project, "")  # nothing loaded from outside


async def test_the_report_reads_the_learning_curve_and_review_time(reviewed_project: str) -> None:
    seen: list[tuple[int, int]] = []

    page = await build_report(
        reviewed_project, PROJECT, hourly_rate_usd=36.0, progress=lambda d, t: seen.append((d, t))
    )

    assert seen[-1] == (140, 140)
    learning = page.split('<section id="learning-curve">', 1)[1].split("</section>", 1)[0]
    assert "holdout accuracy" in learning
    # model id, version, trained on, holdout accuracy
    assert re.search(r"<tr><td>[^<]+</td><td>\d+</td><td>\d+</td><td>[01]\.\d{3}</td>", learning)
    cost = page.split('<section id="cost">', 1)[1].split("</section>", 1)[0]
    assert "timed reviews" in cost
    assert "12.0 s per label" in cost


async def test_an_unknown_project_is_a_clear_error(url: str, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="project 'nope' not found"):
        await build_report(url, "nope")

    out = tmp_path / "report.html"
    result = await asyncio.to_thread(CliRunner().invoke, app, ["report", "nope", "--url", url, "--out", str(out)])

    assert result.exit_code == 1
    assert not out.exists()


async def test_an_unreachable_pipeline_is_a_clear_error() -> None:
    with pytest.raises(ReportError, match="cannot reach the review API"):
        await build_report("http://127.0.0.1:9", PROJECT)


async def test_overlapped_reviews_give_the_human_agreement_table(url: str) -> None:
    async with LabelgateClient(url) as client, httpx.AsyncClient(base_url=url) as http:
        await client.create_project(PROJECT, name="Inbox", labels=["spam", "ham"])
        routing = await http.patch(f"/v1/projects/{PROJECT}/routing", json={"overlap_rate": 1.0, "overlap_k": 2})
        assert routing.status_code == 200, routing.text
        gold: dict[str, str] = {}
        await submit(client, corpus(12, seed=3), gold)
        await settle(client)
        answered = 0
        for reviewer in ("ana", "bo"):
            while (task := await client.lease(PROJECT, reviewer_id=reviewer)) is not None:
                label = gold[task.item_id]
                if reviewer == "bo" and answered % 4 == 0:
                    label = "ham" if label == "spam" else "spam"
                await client.review(PROJECT, task.task_id, task.lease_token, reviewer, [label], duration_s=5.0)
                answered += 1

    page = await build_report(url, PROJECT)

    assert answered == 24
    agreement = page.split('<section id="agreement">', 1)[1].split("</section>", 1)[0]
    assert "Fleiss&#x27; kappa" in agreement
    assert "12 overlapped items, 24 answers" in agreement
    assert "<th>specific agreement</th>" in agreement
