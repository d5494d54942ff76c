"""Labeler throughput with a language-model provider, against the OpenAI test double at a fixed latency.

For each (concurrency C, requests-per-minute limit R) it labels N items through the real labeler (memory
bus, SQLite store, jobs labeled outside the store transaction) and reports items/s and its share of the ideal
min(C / L, R / 60), where L is the double's latency.

    .venv/bin/python benchmarks/bench_llm.py --items 200 --latency 0.2 --concurrency 1 4 16 --rpm 0 1200
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.bus.port import OutgoingMessage
from labelgate_core.events import ItemSubmitted, LabelDef, RoutingPolicy, TaskSpec
from labelgate_core.store.sqlite import SqliteStore
from labelgate_core.topics import LABEL_SCORED, encode, headers_for
from labelgate_labeler.llm.config import LLMProviderConfig
from labelgate_labeler.main import build_labeler
from labelgate_labeler.settings import LabelerSettings
from tests.llm.openai_double import DoubleConfig, OpenAIDouble, ServedDouble

TASK = TaskSpec(labels=(LabelDef(name="billing"), LabelDef(name="shipping"), LabelDef(name="other")))


async def run(items: int, latency: float, concurrency: int, rpm: float | None) -> float:
    double = OpenAIDouble(DoubleConfig(latency_s=latency))
    with ServedDouble(double) as served, tempfile.TemporaryDirectory() as tmp:
        llm = LLMProviderConfig(base_url=served.base_url, model="double-1", concurrency=concurrency,
                                requests_per_minute=rpm, cache_responses=False)
        settings = LabelerSettings(provider="openai", llm=llm, llm_workers=concurrency, retrain_check_s=60)
        bus = MemoryBus(partitions=4)
        service = build_labeler(bus, SqliteStore(Path(tmp) / "l.db"), settings)
        await service.start()
        reader = bus.consumer("bench.scored", [LABEL_SCORED])
        await reader.start()
        events = [
            ItemSubmitted(producer="bench", project_id="p", item_id=f"i{i}", text=f"billing question {i}",
                          task=TASK, routing=RoutingPolicy(), guideline_version=1)
            for i in range(items)
        ]
        started = time.perf_counter()
        await bus.publish([OutgoingMessage(e.topic, e.key, encode(e), tuple(headers_for(e))) for e in events])
        seen = 0
        while seen < items:
            seen += len(await reader.poll(max_records=1000, timeout_s=0.05))
        elapsed = time.perf_counter() - started
        await reader.stop()
        await service.stop()
    return items / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rpm", type=float, nargs="+", default=[0], help="0 = no requests-per-minute limit")
    args = parser.parse_args()
    print(f"items={args.items} latency={args.latency}s")
    print(f"{'C':>4} {'rpm':>6} {'items/s':>8} {'ideal':>8} {'share':>6}")
    for rpm in args.rpm:
        for c in args.concurrency:
            rate = asyncio.run(run(args.items, args.latency, c, rpm or None))
            ideal = c / args.latency if not rpm else min(c / args.latency, rpm / 60)
            print(f"{c:>4} {rpm or '-':>6} {rate:>8.1f} {ideal:>8.1f} {rate / ideal:>6.0%}")


if __name__ == "__main__":
    main()
