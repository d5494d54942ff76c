"""How many SQLite statements each service sends per item and per review, in the embedded pipeline.

Every statement through aiosqlite is a round trip from the event loop to the connection's thread and back, so
their count, more than the SQL itself, sets how many items per second one process decides. This runs the
embedded pipeline in this process, counts the statements of every store connection while N items are posted
(in batches of 100) and decided, then while R of them are reviewed, and prints the counts per item and per
review.

Run from the repository root: ``.venv/bin/python benchmarks/store_statements.py [--items 1000] [--reviews 200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite.core

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the synthetic corpus lives with the e2e tests

from labelgate.embedded import build_pipeline, embedded_settings, serve_in_background  # noqa: E402
from labelgate_client import LabelgateClient  # noqa: E402
from labelgate_core.store.sqlite import SqliteStore  # noqa: E402
from tests.e2e.synthetic import make_items  # noqa: E402

PROJECT = "statements"
BATCH = 100

counts: Counter[str] = Counter()
_owners: dict[int, str] = {}


def _count_statements() -> None:
    """Wrap the store's start (to name its two connections) and aiosqlite's one entry to its thread."""
    start = SqliteStore.start
    execute: Callable[..., Any] = aiosqlite.core.Connection._execute

    async def named_start(self: SqliteStore) -> None:
        await start(self)
        service = Path(self._path).stem
        _owners[id(self._writer)] = f"{service} (writer)"
        _owners[id(self._reader)] = f"{service} (reader)"

    async def counted_execute(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        counts[_owners.get(id(self), "other")] += 1
        return await execute(self, fn, *args, **kwargs)

    SqliteStore.start = named_start  # type: ignore[method-assign]
    aiosqlite.core.Connection._execute = counted_execute  # type: ignore[method-assign]


async def _until(check: Callable[[], Any], timeout_s: float = 600.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("the pipeline did not finish in time")
        await asyncio.sleep(0.2)


def _print(phase: str, per: int, unit: str) -> None:
    print(f"\n{phase}: SQLite statements per {unit} ({per:,} {unit}s)")
    for owner, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {owner:24s} {n / per:7.1f}")
    print(f"  {'all':24s} {sum(counts.values()) / per:7.1f}")


async def _run(items: int, reviews: int) -> None:
    with tempfile.TemporaryDirectory(prefix="labelgate-statements-") as tmp:
        pipeline = build_pipeline(embedded_settings(Path(tmp)))
        async with serve_in_background(pipeline.app) as url, LabelgateClient(url, timeout=300.0) as client:
            await client.create_project(PROJECT, name="Statements", labels=["ham", "spam"])
            corpus = make_items(items)
            gold = {it["id"]: it["label"] for it in corpus}

            async def metrics_idle() -> bool:
                return all([await service.idle() for service in pipeline.services])

            await _until(metrics_idle)
            counts.clear()
            for start in range(0, items, BATCH):
                batch = corpus[start : start + BATCH]
                await client.submit_items(
                    PROJECT, [{"text": it["text"], "idempotency_key": it["id"], "metadata": {"key": it["id"]}}
                              for it in batch]
                )

            async def decided() -> bool:
                return (await client.stats(PROJECT)).submitted == 0 and await metrics_idle()

            await _until(decided)
            _print("posting and deciding (no model yet: every item queued for review)", items, "item")

            counts.clear()
            for _ in range(reviews):
                task = await client.lease(PROJECT, "counter")
                if task is None:
                    break
                await client.review(PROJECT, task.task_id, task.lease_token, "counter", [gold[task.metadata["key"]]])
            await _until(metrics_idle)
            _print("lease + review, and everything the review causes", reviews, "review")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000)
    parser.add_argument("--reviews", type=int, default=200)
    args = parser.parse_args()
    _count_statements()
    asyncio.run(_run(args.items, args.reviews))


if __name__ == "__main__":
    main()
