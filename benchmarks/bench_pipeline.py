"""Pipeline throughput on Kafka and a MongoDB-protocol server: items/s from the first POST until every item is
decided, with the four services as separate processes, against two baselines measured in the same run.

- pipeline: one Kafka 4.1 broker and one SecantusDB server (the test launchers), ``labelgate serve`` for the
  review API, labeler, router and metrics, each its own process. A fresh project receives N items in POSTs of
  ``batch``; the clock stops when the review API has recorded a decision for every item (``stats.submitted``
  is 0). A separate consumer on the pipeline's topics also times when the last ``item.submitted``,
  ``label.scored`` and ``decision.made`` event of the project went by, so each hop shows.
- raw Kafka: messages of the same size (the ``item.submitted`` events the items would cause) through aiokafka on
  the same broker, idempotent producer with acks=all, read back by a consumer group that commits after each poll;
  from the first send to the last message read. One hop, no store: an upper bound for what the bus alone allows.
  It sends more messages than the pipeline gets items (``raw_messages``): N of them take a tenth of a second,
  too short to time on a shared machine.
- embedded: ``labelgate run`` (in-process bus, SQLite, the same four services in one process), the same N items,
  the same clock (first POST until ``stats.submitted`` is 0).

Every repetition starts the four services afresh on new MongoDB databases (SecantusDB scans whole collections
for the store's uniqueness probes, so a repetition on the previous one's data would be slower for that alone) and
writes a new raw topic; the broker, the database server and the embedded process run throughout, each
repetition with a fresh project. The three measurements are interleaved within each repetition so that drift on
a shared machine hits them alike. CPU seconds of every process are recorded too: on a busy machine they vary far
less than wall time.

Run from the repository root: ``.venv/bin/python benchmarks/bench_pipeline.py [--quick]``. Progress goes to
stderr; the summary table to stdout; raw numbers to ``benchmarks/results/`` as JSON. With ``--py-spy PATH`` the
first repetition's pipeline phase is sampled (every service and the database server) and summarised next to the
JSON."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the embedded-pipeline process helper and the synthetic corpus live with the tests

from labelgate_client import LabelgateClient  # noqa: E402
from labelgate_core.events import ItemSubmitted, RoutingPolicy, TaskSpec  # noqa: E402
from labelgate_core.testing.servers.kafka import LocalKafkaBroker  # noqa: E402
from labelgate_core.testing.servers.mongo import LocalSecantusServer  # noqa: E402
from labelgate_core.topics import DECISION_MADE, ITEM_SUBMITTED, LABEL_SCORED, encode, headers_for  # noqa: E402
from tests.e2e.procs import PipelineProcess, free_port, pipeline_env  # noqa: E402
from tests.e2e.synthetic import make_items  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SERVICES = ("review-api", "labeler", "router", "metrics")
HOPS = {ITEM_SUBMITTED: "submitted", LABEL_SCORED: "scored", DECISION_MADE: "decided"}
PARTITIONS = 4  # what the services create their topics with (LABELGATE_KAFKA_TOPIC_PARTITIONS' default)
LABELS = ["ham", "spam"]


@dataclass(frozen=True)
class Plan:
    reps: int
    items: int
    batch: int
    raw_messages: int
    timeout_s: float


# SecantusDB answers the store's uniqueness probes with collection scans, so the cost of an item grows with the
# items before it in the same database: N is sized for the whole run to take about five minutes on two cores.
FULL = Plan(reps=3, items=500, batch=100, raw_messages=10_000, timeout_s=600.0)
QUICK = Plan(reps=1, items=100, batch=50, raw_messages=2_000, timeout_s=120.0)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux), 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each named process used between ``start`` and ``stop``."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._start["bench"] = time.process_time()

    def stop(self) -> dict[str, float]:
        self.used = {name: cpu_seconds(pid) - self._start[name] for name, pid in self.pids.items()}
        self.used["bench"] = time.process_time() - self._start["bench"]
        return self.used


# -- the four services as processes --------------------------------------------------------------------------


class ServiceProcess:
    """``labelgate serve SERVICE`` on a free port, configured by environment like a deployment is."""

    def __init__(self, service: str, env: Mapping[str, str], log_path: Path) -> None:
        self.service = service
        self.port = free_port()
        prefix = "LABELGATE_" + service.upper().replace("-", "_")
        self.env = pipeline_env({**env, f"{prefix}_HOST": "127.0.0.1", f"{prefix}_PORT": str(self.port)})
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def spawn(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "labelgate.cli", "serve", self.service],
            env=self.env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0) as http:
            while True:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"{self.service} exited before it was ready:\n{self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.service} not ready after {timeout_s:.0f}s:\n{self.log_tail()}")
                await asyncio.sleep(0.2)

    async def stop(self, timeout_s: float = 40.0) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, timeout_s)
            except subprocess.TimeoutExpired:
                log(f"  {self.service} ignored SIGTERM for {timeout_s:.0f}s; killing it")
                self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def stop_all(procs: Mapping[str, ServiceProcess]) -> None:
    await asyncio.gather(*(proc.stop() for proc in procs.values()), return_exceptions=True)
    for proc in procs.values():
        proc.kill()


@contextlib.asynccontextmanager
async def four_services(
    bootstrap: str, mongo_url: str, prefix: str, logs: Path
) -> AsyncIterator[dict[str, ServiceProcess]]:
    """The review API, labeler, router and metrics as four processes on Kafka and MongoDB (databases
    ``<prefix>_<service>``), started at once; yields them by name, ready."""
    env = {
        "LABELGATE_BUS": "kafka",
        "LABELGATE_STORE": "mongo",
        "LABELGATE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LABELGATE_MONGO_URL": mongo_url,
        "LABELGATE_MONGO_DATABASE_PREFIX": prefix,
        "LABELGATE_KAFKA_REPLICATION_FACTOR": "1",
        "LABELGATE_KAFKA_MIN_INSYNC_REPLICAS": "1",
        "LABELGATE_LOG_LEVEL": "WARNING",
    }
    procs = {name: ServiceProcess(name, env, logs / f"{prefix}-{name}.log") for name in SERVICES}
    try:
        for proc in procs.values():
            proc.spawn()
        await asyncio.gather(*(proc.wait_ready(180.0) for proc in procs.values()))
        yield procs
    finally:
        await stop_all(procs)


# -- watching the pipeline's topics --------------------------------------------------------------------------


class TopicWatch:
    """Reads the pipeline's topics from their current end (no consumer group, nothing committed) and notes, per
    topic, the distinct items of one project seen and when the last of ``total`` went by."""

    def __init__(self, bootstrap: str, project: str, total: int) -> None:
        self.bootstrap, self.project, self.total = bootstrap, project, total
        self.seen: dict[str, set[str]] = {topic: set() for topic in HOPS}
        self.for_review: set[str] = set()  # items whose decision is needs_review: the review API queues them
        self.done_at: dict[str, float] = {}
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    def count(self, topic: str) -> int:
        return len(self.seen[topic])

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(*HOPS, bootstrap_servers=self.bootstrap, group_id=None, client_id="bench.watch",
                                    enable_auto_commit=False, auto_offset_reset="latest")
        await consumer.start()
        self._consumer = consumer
        deadline = time.monotonic() + 60
        # Without a group every partition of the topics is assigned; their end offsets are fixed before any POST.
        while {tp.topic for tp in consumer.assignment()} != set(HOPS):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no partitions of the pipeline's topics assigned: {sorted(HOPS)}")
            await asyncio.sleep(0.05)
        for tp in consumer.assignment():
            await consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while len(self.done_at) < len(HOPS):
            batches = await self._consumer.getmany(timeout_ms=200, max_records=2_000)
            now = time.perf_counter()
            for tp, messages in batches.items():
                seen = self.seen[tp.topic]
                for message in messages:
                    value = json.loads(message.value)
                    if value.get("project_id") == self.project:
                        seen.add(value["item_id"])
                        if value.get("outcome", "auto_accepted") != "auto_accepted":
                            self.for_review.add(value["item_id"])
                if len(seen) >= self.total and tp.topic not in self.done_at:
                    self.done_at[tp.topic] = now

    async def wait(self, timeout_s: float) -> None:
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


# -- the measurements ----------------------------------------------------------------------------------------


def payload(project: str, n: int, seed: int) -> list[dict[str, Any]]:
    return [
        {"text": it["text"], "idempotency_key": f"{project}-{i}", "metadata": {"gold": it["label"]}}
        for i, it in enumerate(make_items(n, seed=seed))
    ]


async def progress(describe: Callable[[], str], stop: asyncio.Event, every_s: float = 3.0) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if not stop.is_set():
            log(f"  {describe()}")


async def post_all(client: LabelgateClient, project: str, items: list[dict[str, Any]], batch: int,
                   posted: list[int]) -> float:
    """POST the items in batches, one request at a time; returns when the last was accepted."""
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        result = await client.submit_items(project, chunk)
        if result.accepted != len(chunk):
            raise RuntimeError(f"{len(chunk) - result.accepted} items of a batch were not accepted")
        posted[0] += result.accepted
    return time.perf_counter()


async def until_recorded(client: LabelgateClient, project: str, timeout_s: float, *,
                         queue_gauge: tuple[str, int] | None = None) -> tuple[float, int]:
    """Wait until the review API has recorded a decision for every item of the project (``stats.submitted`` is
    0); returns when, and how many items were queued for review.

    ``stats`` is eight counts, cheap on SQLite and polled every 0.1 s there. On SecantusDB each count costs the
    server real time, and polling would slow down the very writes being timed; so there, with ``queue_gauge``
    (the review API's URL and how many items the router sent to review), the review API's queue-depth gauge is
    watched instead, and ``stats`` read once it shows them all (and every 2 s, for decisions that queue
    nothing)."""
    deadline = time.monotonic() + timeout_s
    last_stats = time.monotonic()
    async with httpx.AsyncClient(timeout=30.0) as http:
        while True:
            now = time.perf_counter()
            check = queue_gauge is None or time.monotonic() - last_stats > 2.0
            if queue_gauge is not None and not check:
                url, expected = queue_gauge
                check = await queue_depth(http, url, project) >= expected
            if check:
                last_stats = time.monotonic()
                stats = await client.stats(project)
                if stats.submitted == 0:
                    return now, stats.queue_depth
            if time.monotonic() > deadline:
                raise TimeoutError(f"items still undecided after {timeout_s:.0f}s")
            await asyncio.sleep(0.1)


async def queue_depth(http: httpx.AsyncClient, url: str, project: str) -> float:
    text = (await http.get(f"{url}/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "labelgate_review_queue_depth" and sample.labels.get("project") == project
    )


async def pipeline_rep(url: str, bootstrap: str, project: str, plan: Plan, seed: int, cpu: CpuMeter,
                       profile: Profiler | None) -> dict[str, Any]:
    items = payload(project, plan.items, seed)
    async with LabelgateClient(url, timeout=600.0) as client:
        await client.create_project(project, name=project, labels=LABELS)
        watch = TopicWatch(bootstrap, project, plan.items)
        await watch.start()
        posted = [0]
        stop = asyncio.Event()

        def describe() -> str:
            elapsed = time.perf_counter() - started
            decided = watch.count(DECISION_MADE)
            return (f"posted {posted[0]:,}, item.submitted {watch.count(ITEM_SUBMITTED):,}, label.scored "
                    f"{watch.count(LABEL_SCORED):,}, decision.made {decided:,}/{plan.items:,} "
                    f"({decided / elapsed:,.1f}/s)")

        started = time.perf_counter()
        reporter = asyncio.create_task(progress(describe, stop))
        try:
            with profile or contextlib.nullcontext():
                cpu.start()
                started = time.perf_counter()
                posted_at = await post_all(client, project, items, plan.batch, posted)
                await watch.wait(plan.timeout_s)
                recorded_at, queued = await until_recorded(
                    client, project, plan.timeout_s, queue_gauge=(url, len(watch.for_review))
                )
                used = cpu.stop()
        finally:
            stop.set()
            await reporter
            await watch.stop()
    hops = {HOPS[topic]: at - started for topic, at in watch.done_at.items()}
    wall = recorded_at - started
    return {
        "items": plan.items,
        "post_s": posted_at - started,
        **{f"{hop}_s": s for hop, s in hops.items()},
        "recorded_s": wall,
        "items_per_s": plan.items / wall,
        "topic_items_per_s": plan.items / hops["decided"],
        "queued_for_review": queued,
        "cpu_s": used,
        "cpu_total_s": sum(used[name] for name in (*SERVICES, "secantusdb", "kafka")),
    }


async def embedded_rep(pipeline: PipelineProcess, project: str, plan: Plan, seed: int) -> dict[str, Any]:
    items = payload(project, plan.items, seed)
    cpu = CpuMeter({"embedded": pipeline.pid})
    async with LabelgateClient(pipeline.url, timeout=600.0) as client:
        await client.create_project(project, name=project, labels=LABELS)
        posted = [0]
        stop = asyncio.Event()
        reporter = asyncio.create_task(progress(lambda: f"posted {posted[0]:,}/{plan.items:,}", stop))
        try:
            cpu.start()
            started = time.perf_counter()
            posted_at = await post_all(client, project, items, plan.batch, posted)
            recorded_at, queued = await until_recorded(client, project, plan.timeout_s)
            used = cpu.stop()
        finally:
            stop.set()
            await reporter
    wall = recorded_at - started
    return {
        "items": plan.items,
        "post_s": posted_at - started,
        "recorded_s": wall,
        "items_per_s": plan.items / wall,
        "queued_for_review": queued,
        "cpu_s": used,
        "cpu_total_s": used["embedded"],
    }


def raw_messages(n: int, seed: int) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(key, value, headers) of the ``item.submitted`` events N items would cause: the first hop's messages."""
    task = TaskSpec.model_validate({"labels": [{"name": name} for name in LABELS]})
    out = []
    for item in payload("raw", n, seed):
        event = ItemSubmitted(producer="review-api", project_id="bench-raw", item_id=f"raw-{item['idempotency_key']}",
                              text=item["text"], metadata=item["metadata"], task=task, routing=RoutingPolicy(),
                              guideline_version=1)
        out.append((event.key.encode(), encode(event), headers_for(event)))
    return out


async def raw_kafka_rep(bootstrap: str, topic: str, plan: Plan, seed: int, broker_pid: int | None) -> dict[str, Any]:
    """N messages produced (idempotent, acks=all, in batches like the POSTs) and read back by a consumer group
    that commits after each poll; timed from the first send to the last message read."""
    messages = raw_messages(plan.raw_messages, seed)
    total = len(messages)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench.raw.admin")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs={"min.insync.replicas": "1"})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="bench.raw.producer", acks="all",
                                enable_idempotence=True, linger_ms=0)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench.raw.{topic}",
                                client_id="bench.raw.consumer", enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while len(consumer.assignment()) < PARTITIONS:  # joined the group before the clock starts
            await consumer.getmany(timeout_ms=100)
            if time.monotonic() > deadline:
                raise TimeoutError("the raw consumer got no partitions")
        received = 0

        async def consume() -> float:
            nonlocal received
            while received < total:
                batches = await consumer.getmany(timeout_ms=200, max_records=plan.batch)
                received += sum(len(batch) for batch in batches.values())
                if batches:
                    await consumer.commit()
            return time.perf_counter()

        cpu = CpuMeter({"broker": broker_pid})
        cpu.start()
        started = time.perf_counter()
        reader = asyncio.create_task(consume())
        for start in range(0, len(messages), plan.batch):
            sends = [await producer.send(topic, value, key=key, headers=headers)
                     for key, value, headers in messages[start : start + plan.batch]]
            await asyncio.gather(*sends)
        produced_at = time.perf_counter()
        consumed_at = await asyncio.wait_for(reader, plan.timeout_s)
        used = cpu.stop()
    finally:
        await consumer.stop()
        await producer.stop()
    wall = consumed_at - started
    return {
        "messages": total,
        "message_bytes": statistics.median(len(value) for _, value, _ in messages),
        "produce_s": produced_at - started,
        "consumed_s": wall,
        "messages_per_s": total / wall,
        "cpu_s": used,
    }


async def metrics_caught_up(url: str, project: str, items: int, timeout_s: float = 120.0) -> float:
    """Wait until the metrics service has counted every decision of the project, so the services stop with
    nothing left for the next repetition (their consumer groups resume where these ones committed)."""
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        while time.perf_counter() - started < timeout_s:
            counted = sum(
                sample.value
                for family in text_string_to_metric_families((await http.get("/metrics")).text)
                for sample in family.samples
                if sample.name == "labelgate_router_decisions_total" and sample.labels.get("project") == project
            )
            if counted >= items:
                return time.perf_counter() - started
            await asyncio.sleep(0.5)
    log(f"  the metrics service had not counted {items} decisions after {timeout_s:.0f}s; going on")
    return float("nan")


# -- profiling -----------------------------------------------------------------------------------------------


class Profiler:
    """py-spy sampling several processes while one phase runs; a summary per process of where CPU time went."""

    def __init__(self, py_spy: str, pids: Mapping[str, int | None], out: Path) -> None:
        self.py_spy, self.pids, self.out = py_spy, {k: v for k, v in pids.items() if v}, out
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0.0

    def path(self, name: str) -> Path:
        return self.out.with_name(f"{self.out.stem}-{name}.prof.txt")

    def __enter__(self) -> Profiler:
        self.started = time.perf_counter()
        for name, pid in self.pids.items():
            self.processes[name] = subprocess.Popen(
                [self.py_spy, "record", "--pid", str(pid), "--rate", "50", "--format", "raw", "--nonblocking",
                 "--output", str(self.path(name))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        return self

    def __exit__(self, *_: object) -> None:
        seconds = time.perf_counter() - self.started
        for process in self.processes.values():
            process.send_signal(signal.SIGINT)
        parts = []
        for name, process in self.processes.items():
            process.wait(timeout=60)
            parts.append(f"=== {name}\n{summarise_profile(self.path(name), seconds, 50)}")
        summary = "\n".join(parts)
        self.out.with_name(f"{self.out.stem}-profile.summary.txt").write_text(summary)
        log(f"profile summary: {self.out.with_name(f'{self.out.stem}-profile.summary.txt')}")


def _function(frame: str) -> str:
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


# Leaf frames that wait (for a socket, a lock, the event loop's poll) rather than compute.
_WAITING = ("select (selectors.py)", "_recv_exactly (secantus/wire.py)", "Condition.wait (threading.py)",
            "Event.wait (threading.py)", "sleep (")


def summarise_profile(path: Path, seconds: float, rate: int, top: int = 12) -> str:
    """Where a process's samples went: waiting (poll, socket read, lock) apart, then own and inclusive time of
    the functions that compute, as shares of the computing samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = waiting = 0
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [_function(frame) for frame in stack.split(";") if " (" in frame]
            if not frames or not count.isdigit():
                continue
            n = int(count)
            total += n
            if any(frames[-1].endswith(w) or frames[-1].startswith(w) for w in _WAITING):
                waiting += n
                continue
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    busy = total - waiting
    if not busy:
        return "no samples\n"
    lines = [f"{total} samples of all threads in {seconds:.0f}s at {rate}/s; {busy} not waiting "
             f"({busy / (seconds * rate):.0%} of one thread's time), the shares below are of those", "own time:"]
    lines += [f"  {100 * n / busy:5.1f}%  {name}" for name, n in own.most_common(top)]
    keep = ("labelgate_", "secantus", "pymongo", "aiokafka", "pydantic", "sklearn", "bson", "fastapi")
    skip = ("labelgate/cli.py", "/main.py)")
    lines += ["inclusive time:"]
    picked = [(name, n) for name, n in inclusive.most_common()
              if any(k in name for k in keep) and not any(k in name for k in skip)]
    lines += [f"  {100 * n / busy:5.1f}%  {name}" for name, n in picked[:top]]
    return "\n".join(lines) + "\n"


# -- the run -------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), "load_avg_at_start": os.getloadavg()}


@dataclass
class Servers:
    broker: LocalKafkaBroker = field(default_factory=LocalKafkaBroker)
    mongo: LocalSecantusServer = field(default_factory=LocalSecantusServer)

    # The launchers keep their child process private; its pid is only read here, for CPU accounting.
    @property
    def broker_pid(self) -> int | None:
        process = getattr(self.broker, "_process", None)
        return process.pid if process is not None else None

    @property
    def mongo_pid(self) -> int | None:
        process = getattr(self.mongo, "_proc", None)
        return process.pid if process is not None else None


@contextlib.contextmanager
def servers() -> Iterator[Servers]:
    running = Servers()
    started = time.perf_counter()
    with running.broker, running.mongo:
        log(f"Kafka {running.broker.version} at {running.broker.bootstrap}, SecantusDB at {running.mongo.url} "
            f"({time.perf_counter() - started:.1f}s)")
        yield running


async def one_rep(rep: int, plan: Plan, run_id: str, srv: Servers, embedded: PipelineProcess, tmp: Path,
                  py_spy: str | None, out: Path) -> dict[str, Any]:
    prefix = f"bench{run_id}r{rep}"
    bootstrap = srv.broker.bootstrap
    load = os.getloadavg()[0]

    log(f"rep {rep}/{plan.reps}: raw Kafka, {plan.raw_messages:,} messages (load average {load:.1f})")
    raw = await raw_kafka_rep(bootstrap, f"bench.raw.{prefix}", plan, rep, srv.broker_pid)
    log(f"  {raw['messages_per_s']:,.0f} messages/s ({raw['message_bytes']:.0f} bytes each; produced in "
        f"{raw['produce_s']:.2f}s, all read after {raw['consumed_s']:.2f}s)")

    log(f"rep {rep}/{plan.reps}: starting the four services on Kafka + SecantusDB (databases {prefix}_*)")
    started = time.perf_counter()
    async with four_services(bootstrap, srv.mongo.url, prefix, tmp) as procs:
        log(f"  ready after {time.perf_counter() - started:.1f}s; {plan.items:,} items in POSTs of {plan.batch}")
        pids = {name: proc.pid for name, proc in procs.items()}
        pids |= {"secantusdb": srv.mongo_pid, "kafka": srv.broker_pid, "embedded_idle": embedded.pid}
        profiled = {k: v for k, v in pids.items() if k in (*SERVICES, "secantusdb")}
        profile = Profiler(py_spy, profiled, out) if py_spy else None
        project = f"{prefix}-kafka"
        pipe = await pipeline_rep(procs["review-api"].url, bootstrap, project, plan, rep, CpuMeter(pids), profile)
        log(f"  {pipe['items_per_s']:,.1f} items/s: posted after {pipe['post_s']:.1f}s, item.submitted all out "
            f"after {pipe['submitted_s']:.1f}s, label.scored {pipe['scored_s']:.1f}s, decision.made "
            f"{pipe['decided_s']:.1f}s, recorded {pipe['recorded_s']:.1f}s; {pipe['cpu_total_s']:.1f} CPU s")
        # Their consumer groups resume where these commit: leave nothing behind for the next repetition.
        pipe["metrics_caught_up_s"] = await metrics_caught_up(procs["metrics"].url, project, plan.items)

    log(f"rep {rep}/{plan.reps}: embedded (labelgate run: in-process bus, SQLite), {plan.items:,} items")
    emb = await embedded_rep(embedded, f"{prefix}-embedded", plan, rep)
    log(f"  {emb['items_per_s']:,.1f} items/s: posted after {emb['post_s']:.1f}s, recorded {emb['recorded_s']:.1f}s;"
        f" {emb['cpu_total_s']:.1f} CPU s")

    ratios = {
        "pipeline_vs_raw_kafka": pipe["items_per_s"] / raw["messages_per_s"],
        "pipeline_vs_embedded": pipe["items_per_s"] / emb["items_per_s"],
        "embedded_vs_raw_kafka": emb["items_per_s"] / raw["messages_per_s"],
        "pipeline_cpu_per_item_vs_embedded": pipe["cpu_total_s"] / emb["cpu_total_s"],
    }
    log(f"  ratios: pipeline/raw Kafka {ratios['pipeline_vs_raw_kafka']:.4f}, pipeline/embedded "
        f"{ratios['pipeline_vs_embedded']:.3f}, CPU per item pipeline/embedded "
        f"{ratios['pipeline_cpu_per_item_vs_embedded']:.0f}")
    return {"load_avg_1m": load, "raw_kafka": raw, "pipeline": pipe, "embedded": emb, "ratios": ratios}


def _numbers(row: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in row.items():
        if isinstance(value, Mapping):
            flat |= _numbers(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def medians(rows: list[dict[str, Any]]) -> dict[str, float]:
    flats = [_numbers(row) for row in rows]
    return {key: statistics.median(flat[key] for flat in flats) for key in flats[0]}


def table(m: Mapping[str, Mapping[str, float]], plan: Plan) -> str:
    raw, pipe, emb, r = m["raw_kafka"], m["pipeline"], m["embedded"], m["ratios"]
    reps = f"median of {plan.reps}" if plan.reps > 1 else "1 run"
    n = plan.items
    cpu = ", ".join(
        f"{name} {pipe[f'cpu_s.{name}']:.1f}" for name in ("secantusdb", "kafka", *SERVICES) if f"cpu_s.{name}" in pipe
    )
    return "\n".join([
        f"| {n:,} items, POSTs of {plan.batch} ({reps}) | throughput | wall | CPU per item | ratio |",
        "|---|---|---|---|---|",
        f"| raw aiokafka produce→consume ({raw['messages']:,.0f} messages of {raw['message_bytes']:.0f} bytes) | "
        f"{raw['messages_per_s']:,.0f} msg/s | {raw['consumed_s']:.2f} s | "
        f"{1000 * (raw['cpu_s.broker'] + raw['cpu_s.bench']) / raw['messages']:.2f} ms | 1 |",
        f"| pipeline, 4 processes on Kafka + SecantusDB: POST → decision recorded | {pipe['items_per_s']:,.1f} "
        f"items/s | {pipe['recorded_s']:.1f} s | {1000 * pipe['cpu_total_s'] / n:.0f} ms | "
        f"{r['pipeline_vs_raw_kafka']:.4f} of raw Kafka, {r['pipeline_vs_embedded']:.3f} of embedded |",
        f"| …POST → last decision.made on the topic | {pipe['topic_items_per_s']:,.1f} items/s | "
        f"{pipe['decided_s']:.1f} s | | |",
        f"| embedded `labelgate run` (memory bus, SQLite): POST → decision recorded | {emb['items_per_s']:,.1f} "
        f"items/s | {emb['recorded_s']:.1f} s | {1000 * emb['cpu_total_s'] / n:.1f} ms | "
        f"{r['embedded_vs_raw_kafka']:.3f} of raw Kafka |",
        "",
        f"Pipeline hops (median, seconds from the first POST): all POSTs answered {pipe['post_s']:.1f}, last "
        f"item.submitted {pipe['submitted_s']:.1f}, last label.scored {pipe['scored_s']:.1f}, last decision.made "
        f"{pipe['decided_s']:.1f}, all recorded by the review API {pipe['recorded_s']:.1f}.",
        f"CPU seconds in the pipeline phase (median): {cpu}; total {pipe['cpu_total_s']:.1f}, "
        f"{r['pipeline_cpu_per_item_vs_embedded']:.0f}x the embedded process's {emb['cpu_total_s']:.1f} "
        "for the same items.",
    ])


async def run(plan: Plan, py_spy: str | None, out: Path) -> dict[str, Any]:
    run_id = datetime.now(UTC).strftime("%H%M%S")
    reps: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="labelgate-bench-pipeline-") as tmp:
        embedded = PipelineProcess(Path(tmp) / "embedded", log_path=Path(tmp) / "embedded.log")
        # Spawned first, so that it imports while the broker and the database server start.
        starting = asyncio.create_task(embedded.start(180.0))
        await asyncio.sleep(0)
        try:
            with servers() as srv:
                await starting
                log(f"labelgate run ready on {embedded.url}")
                for rep in range(1, plan.reps + 1):
                    reps.append(await one_rep(rep, plan, run_id, srv, embedded, Path(tmp),
                                              py_spy if rep == 1 else None, out))
        finally:
            if not starting.done():
                starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
            with contextlib.suppress(Exception):
                await embedded.stop()
            embedded.kill()
    return {"plan": plan.__dict__, "machine": machine(), "reps": reps, "median": medians(reps)}


def nested(flat: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """``{"pipeline.cpu_s.router": x}`` → ``{"pipeline": {"cpu_s.router": x}}``."""
    out: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        out.setdefault(head, {})[rest] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small repetition (a smoke test, under a minute)")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, or 1 with --quick)")
    parser.add_argument("--items", type=int, help=f"items per repetition (default {FULL.items:,})")
    parser.add_argument("--batch", type=int, help=f"items per POST (default {FULL.batch})")
    parser.add_argument("--raw-messages", type=int,
                        help=f"messages of the raw Kafka baseline (default {FULL.raw_messages:,})")
    parser.add_argument("--py-spy", metavar="PATH", help="py-spy executable: profile the first pipeline phase")
    parser.add_argument("--out", type=Path, help="where to write the JSON (default benchmarks/results/…)")
    args = parser.parse_args()
    # A group coordinator that is not there yet right after a topic appears is retried by aiokafka; not news.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    plan = QUICK if args.quick else FULL
    overrides = {"reps": args.reps, "items": args.items, "batch": args.batch, "raw_messages": args.raw_messages}
    plan = Plan(**{**plan.__dict__, **{k: v for k, v in overrides.items() if v}})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or RESULTS / f"bench_pipeline-{'quick-' if args.quick else ''}{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    log(f"plan: {plan}; machine: {machine()}")
    started = time.perf_counter()
    data = asyncio.run(run(plan, args.py_spy, out))
    data["total_s"] = time.perf_counter() - started
    out.write_text(json.dumps(data, indent=2) + "\n")
    log(f"raw results: {out} (whole run {data['total_s']:.0f}s)")
    print(table(nested(data["median"]), plan))


if __name__ == "__main__":
    main()
