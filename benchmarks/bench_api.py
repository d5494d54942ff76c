"""Throughput and latency of the REST API of a real `labelgate run` (the embedded default: four services in one
process, the journaled in-process bus, SQLite), measured through the typed client.

Three measurements, each repeated (default 3 times, interleaved so that drift hits them alike):

- baseline: GET /healthz from 32 concurrent clients: what the HTTP stack alone costs on this machine;
- ingest: 32 concurrent clients posting batches of 100 items with idempotency keys (>= 20,000 items);
  also how long the pipeline takes to decide every item (label, route, queue), measured from the first POST;
- reviews: 32 concurrent reviewers, each leasing a task and reviewing it, until >= 2,000 reviews.

Run from the repository root: ``.venv/bin/python benchmarks/bench_api.py [--quick]``. Progress goes to stderr;
the summary table to stdout; the raw numbers to ``benchmarks/results/`` as JSON. With ``--py-spy PATH`` the
first repetition's ingest and review phases are sampled with py-spy and summarised next to the JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the subprocess helpers and the synthetic corpus live with the e2e tests

from labelgate_client import LabelgateClient  # noqa: E402
from labelgate_client.models import Stats  # noqa: E402
from tests.e2e.procs import PipelineProcess  # noqa: E402
from tests.e2e.synthetic import make_items  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Plan:
    reps: int
    clients: int
    batch: int
    batches_per_client: int
    reviews: int
    healthz_per_client: int
    max_batch: int = 10_000

    @property
    def items(self) -> int:
        return self.clients * self.batch * self.batches_per_client


FULL = Plan(reps=3, clients=32, batch=100, batches_per_client=7, reviews=2_000, healthz_per_client=200)
QUICK = Plan(reps=1, clients=32, batch=100, batches_per_client=2, reviews=500, healthz_per_client=50, max_batch=2_000)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on sorted values."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def latency(values: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(values, 50) * 1000, "p99_ms": percentile(values, 99) * 1000, "n": len(values)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Meter:
    """Wall time, and the CPU the server and this load generator used, over one phase."""

    server_pid: int
    started: float = 0.0
    server_cpu0: float = 0.0
    client_cpu0: float = 0.0
    result: dict[str, float] = field(default_factory=dict)

    def __enter__(self) -> Meter:
        self.started = time.perf_counter()
        self.server_cpu0 = cpu_seconds(self.server_pid)
        self.client_cpu0 = time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        wall = time.perf_counter() - self.started
        self.result = {
            "wall_s": wall,
            "server_cpu_s": cpu_seconds(self.server_pid) - self.server_cpu0,
            "client_cpu_s": time.process_time() - self.client_cpu0,
        }


async def report_progress(what: str, done: Callable[[], int], total: int, stop: asyncio.Event) -> None:
    started = time.perf_counter()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 2.0)
        except TimeoutError:
            n = done()
            log(f"  {what}: {n:,}/{total:,} ({n / (time.perf_counter() - started):,.0f}/s)")


async def with_progress(what: str, done: Callable[[], int], total: int, work: Awaitable[Any]) -> None:
    stop = asyncio.Event()
    reporter = asyncio.create_task(report_progress(what, done, total, stop))
    try:
        await work
    finally:
        stop.set()
        await reporter


# -- the three measurements ----------------------------------------------------------------------------------


async def baseline(clients: list[LabelgateClient], plan: Plan, pid: int) -> dict[str, Any]:
    latencies: list[float] = []

    async def worker(client: LabelgateClient) -> None:
        for _ in range(plan.healthz_per_client):
            started = time.perf_counter()
            if not await client.healthz():
                raise RuntimeError("GET /healthz failed")
            latencies.append(time.perf_counter() - started)

    total = plan.clients * plan.healthz_per_client
    with Meter(pid) as meter:
        await with_progress("healthz", lambda: len(latencies), total,
                            asyncio.gather(*(worker(c) for c in clients)))
    return {**meter.result, "requests": total, "req_per_s": total / meter.result["wall_s"], **latency(latencies)}


def corpus(project: str, plan: Plan, seed: int) -> list[list[list[dict[str, Any]]]]:
    """Per client, its batches: synthetic texts with unique keys, the gold label in the metadata."""
    items = make_items(plan.items, seed=seed)
    payload = [
        {"text": it["text"], "idempotency_key": f"{project}-{n}", "metadata": {"gold": it["label"]}}
        for n, it in enumerate(items)
    ]
    per_client = plan.batch * plan.batches_per_client
    return [
        [payload[c * per_client + b * plan.batch : c * per_client + (b + 1) * plan.batch]
         for b in range(plan.batches_per_client)]
        for c in range(plan.clients)
    ]


async def decided(client: LabelgateClient, project: str) -> Stats:
    """Wait until the review API has recorded a decision for every item of the project."""
    while (stats := await client.stats(project)).submitted > 0:  # noqa: ASYNC110 (polls another process)
        await asyncio.sleep(0.25)
    return stats


async def ingest(clients: list[LabelgateClient], project: str, plan: Plan, pid: int) -> dict[str, Any]:
    work = corpus(project, plan, seed=int(project.rsplit("-", 1)[1]))
    latencies: list[float] = []
    accepted = 0

    async def worker(client: LabelgateClient, batches: list[list[dict[str, Any]]]) -> None:
        nonlocal accepted
        for batch in batches:
            started = time.perf_counter()
            result = await client.submit_items(project, batch)
            latencies.append(time.perf_counter() - started)
            if result.accepted != len(batch):
                raise RuntimeError(f"{len(batch) - result.accepted} items of a batch were not accepted")
            accepted += result.accepted

    started = time.perf_counter()
    with Meter(pid) as meter:
        await with_progress("ingest items", lambda: accepted, plan.items,
                            asyncio.gather(*(worker(c, b) for c, b in zip(clients, work, strict=True))))
    # Every item decided (labeled, routed, recorded by the review API), counted from the first POST.
    with Meter(pid) as drain:
        stats = await decided(clients[0], project)
    decided_s = time.perf_counter() - started
    return {
        **meter.result,
        "items": accepted,
        "requests": len(latencies),
        "items_per_s": accepted / meter.result["wall_s"],
        "req_per_s": len(latencies) / meter.result["wall_s"],
        **latency(latencies),
        "decided_s": decided_s,
        "decided_items_per_s": accepted / decided_s,
        "drain_server_cpu_s": drain.result["server_cpu_s"],
        "queued_for_review": stats.queue_depth,
    }


async def max_batch(
    client: LabelgateClient, project: str, size: int, seed: int, pid: int, profiler: Profiler
) -> dict[str, Any]:
    """One POST of the largest batch the API takes, into a quiet pipeline (profiled alone, if asked), then the
    time until the pipeline has decided every item of it."""
    batch = [
        {"text": it["text"], "idempotency_key": f"{project}-{n}", "metadata": {"gold": it["label"]}}
        for n, it in enumerate(make_items(size, seed=seed))
    ]
    started = time.perf_counter()
    with profiler, Meter(pid) as meter:
        result = await client.submit_items(project, batch)
    if result.accepted != size:
        raise RuntimeError(f"{size - result.accepted} items of the batch were not accepted")
    await decided(client, project)
    decided_s = time.perf_counter() - started
    return {**meter.result, "items": size, "items_per_s": size / meter.result["wall_s"], "decided_s": decided_s}


async def reviews(clients: list[LabelgateClient], project: str, plan: Plan, pid: int) -> dict[str, Any]:
    lease_latencies: list[float] = []
    review_latencies: list[float] = []

    async def reviewer(client: LabelgateClient, name: str) -> None:
        while len(review_latencies) < plan.reviews:
            started = time.perf_counter()
            task = await client.lease(project, name)
            lease_latencies.append(time.perf_counter() - started)
            if task is None:
                raise RuntimeError("the review queue ran dry")
            started = time.perf_counter()
            await client.review(project, task.task_id, task.lease_token, name, [str(task.metadata["gold"])])
            review_latencies.append(time.perf_counter() - started)

    with Meter(pid) as meter:
        await with_progress("reviews", lambda: len(review_latencies), plan.reviews,
                            asyncio.gather(*(reviewer(c, f"bench-{n}") for n, c in enumerate(clients))))
    done = len(review_latencies)
    lease = latency(lease_latencies)
    return {
        **meter.result,
        "reviews": done,
        "reviews_per_s": done / meter.result["wall_s"],
        "req_per_s": (done + len(lease_latencies)) / meter.result["wall_s"],
        **latency(review_latencies),
        "lease_p50_ms": lease["p50_ms"],
        "lease_p99_ms": lease["p99_ms"],
    }


async def quiet(url: str, project: str, items: int, timeout_s: float = 600.0) -> float:
    """Wait until the metrics service has counted every decision of the project (the pipeline's last step),
    so the next measurement does not compete with this one's tail. Returns the seconds waited."""
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as http:
        while time.perf_counter() - started < timeout_s:
            text = (await http.get("/metrics")).text
            counted = sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "labelgate_router_decisions_total" and sample.labels.get("project") == project
            )
            if counted >= items:
                return time.perf_counter() - started
            await asyncio.sleep(0.5)
    raise TimeoutError(f"the metrics service had not counted {items} decisions after {timeout_s:.0f}s")


# -- profiling -----------------------------------------------------------------------------------------------


class Profiler:
    """py-spy sampling the server while one phase runs; the summary lists where its CPU time went."""

    gil_only = False
    """Sample only the thread holding the GIL: where Python time goes, without SQLite's C code in the store
    threads, and without threads that merely wait for the GIL (on a busy machine they look busy)."""

    def __init__(self, py_spy: str | None, pid: int, out: Path, rate: int = 100) -> None:
        self.py_spy, self.pid, self.out, self.rate = py_spy, pid, out, rate
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        if self.py_spy:
            self.process = subprocess.Popen(
                [self.py_spy, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw",
                 "--nonblocking", "--output", str(self.out), *(["--gil"] if self.gil_only else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        return self

    def __exit__(self, *_: object) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=60)
            summary = summarise_profile(self.out)
            self.out.with_suffix(".summary.txt").write_text(summary)
            log(f"profile: {self.out}\n{summary}")


def _function(frame: str) -> str:
    """``name (path:line)`` → ``name (short path)``: samples are summed per function, not per line."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def summarise_profile(path: Path, top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_function(frame) for frame in stack.split(";") if " (" in frame]
        if not frames:
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "no samples\n"
    lines = [f"{total} samples (all threads)", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive time (the services' code, the store, pydantic, json, ids, the model):"]
    interesting = ("labelgate_", "aiosqlite", "pydantic", "json", "uuid", "sklearn", "prometheus")
    picked = [(name, n) for name, n in inclusive.most_common() if any(k in name for k in interesting)]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in picked[:top]]
    return "\n".join(lines) + "\n"


# -- the run -------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": os.getloadavg(),
    }


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {k: statistics.median(float(run[k]) for run in runs) for k in keys}


def ratios(rep: dict[str, dict[str, Any]]) -> dict[str, float]:
    base, ing, rev = rep["baseline"], rep["ingest"], rep["reviews"]
    return {
        "ingest_req_rate_vs_healthz": ing["req_per_s"] / base["req_per_s"],
        "ingest_p50_vs_healthz": ing["p50_ms"] / base["p50_ms"],
        "ingest_p99_vs_healthz": ing["p99_ms"] / base["p99_ms"],
        "review_req_rate_vs_healthz": rev["req_per_s"] / base["req_per_s"],
        "review_p50_vs_healthz": rev["p50_ms"] / base["p50_ms"],
        "review_p99_vs_healthz": rev["p99_ms"] / base["p99_ms"],
        "lease_p50_vs_healthz": rev["lease_p50_ms"] / base["p50_ms"],
        "lease_p99_vs_healthz": rev["lease_p99_ms"] / base["p99_ms"],
    }


def table(data: dict[str, Any]) -> str:
    """The summary as a Markdown table: medians, with the range over the repetitions where there are several."""
    plan = Plan(**data["plan"])
    reps: list[dict[str, dict[str, float]]] = data["reps"]
    med: dict[str, dict[str, float]] = data["median"]

    def val(phase: str, key: str, fmt: str = ",.0f", scale: float = 1.0) -> str:
        text = format(med[phase][key] * scale, fmt)
        if len(reps) > 1:
            values = [rep[phase][key] * scale for rep in reps]
            text += f" ({format(min(values), fmt)} to {format(max(values), fmt)})"
        return text

    def cpu_ms_per(phase: str, keys: tuple[str, ...], per: str) -> str:
        values = [sum(rep[phase][k] for k in keys) / rep[phase][per] * 1000 for rep in reps]
        return f"{statistics.median(values):.2f}"

    x = med["ratios"]
    how = f"median (min to max) of {plan.reps}" if plan.reps > 1 else "1 run"
    rows = [
        f"| {plan.clients} concurrent clients, {how} | throughput | p50 | p99 | vs GET /healthz (p50, p99) |",
        "|---|---|---|---|---|",
        f"| GET /healthz (baseline) | {val('baseline', 'req_per_s')} req/s | {val('baseline', 'p50_ms', '.1f')} ms "
        f"| {val('baseline', 'p99_ms', '.1f')} ms | 1 |",
        f"| POST items, {plan.batch} per request ({plan.items:,} items) | {val('ingest', 'items_per_s')} items/s "
        f"| {val('ingest', 'p50_ms')} ms | {val('ingest', 'p99_ms')} ms "
        f"| x{x['ingest_p50_vs_healthz']:.0f}, x{x['ingest_p99_vs_healthz']:.0f} |",
        f"| …until every item is decided (from the first POST) | {val('ingest', 'decided_items_per_s')} items/s "
        "| | | |",
        f"| POST items, one request of {plan.max_batch:,} (quiet pipeline) | {val('max_batch', 'items_per_s')} "
        f"items/s | {val('max_batch', 'wall_s', ',.0f', 1000)} ms (the request) | | |",
        f"| …until every item is decided | {format(plan.max_batch / med['max_batch']['decided_s'], ',.0f')} items/s "
        "| | | |",
        f"| POST review ({plan.reviews:,} reviews) | {val('reviews', 'reviews_per_s', ',.1f')} reviews/s "
        f"| {val('reviews', 'p50_ms')} ms | {val('reviews', 'p99_ms')} ms "
        f"| x{x['review_p50_vs_healthz']:.0f}, x{x['review_p99_vs_healthz']:.0f} |",
        f"| POST queue/lease (same run, one per review) | | {val('reviews', 'lease_p50_ms')} ms "
        f"| {val('reviews', 'lease_p99_ms')} ms | x{x['lease_p50_vs_healthz']:.0f}, x{x['lease_p99_vs_healthz']:.0f} |",
        "",
        "Server CPU time (median; steadier than wall time on a shared machine): "
        f"{cpu_ms_per('baseline', ('server_cpu_s',), 'requests')} ms per GET /healthz; "
        f"{cpu_ms_per('ingest', ('server_cpu_s',), 'items')} ms per item while the POSTs run, "
        f"{cpu_ms_per('ingest', ('server_cpu_s', 'drain_server_cpu_s'), 'items')} ms per item until decided; "
        f"{cpu_ms_per('reviews', ('server_cpu_s',), 'reviews')} ms per lease + review.",
    ]
    return "\n".join(rows)


async def run(plan: Plan, py_spy: str | None, out: Path) -> dict[str, Any]:
    reps: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="labelgate-bench-") as tmp:
        pipeline = PipelineProcess(Path(tmp) / "data")
        log(f"starting labelgate run in {tmp}")
        await pipeline.start()
        pid = pipeline.pid
        assert pid is not None
        log(f"ready on {pipeline.url} (pid {pid})")
        clients = [LabelgateClient(pipeline.url, timeout=600.0) for _ in range(plan.clients)]
        try:
            for rep in range(1, plan.reps + 1):
                project = f"bench-{rep}"
                for name in (project, f"{project}-max"):
                    await clients[0].create_project(name, name=f"Benchmark {name}", labels=["ham", "spam"])
                log(f"rep {rep}/{plan.reps}: baseline, {plan.clients * plan.healthz_per_client:,} GET /healthz")
                base = await baseline(clients, plan, pid)
                log(f"  {base['req_per_s']:,.0f} req/s, p50 {base['p50_ms']:.1f} ms, p99 {base['p99_ms']:.1f} ms")
                log(f"rep {rep}/{plan.reps}: ingest, {plan.items:,} items in batches of {plan.batch}")
                with Profiler(py_spy if rep == 1 else None, pid, out.with_name(f"{out.stem}-ingest.prof.txt")):
                    ing = await ingest(clients, project, plan, pid)
                log(f"  {ing['items_per_s']:,.0f} items/s, p50 {ing['p50_ms']:.0f} ms, p99 {ing['p99_ms']:.0f} ms;"
                    f" all decided after {ing['decided_s']:.1f} s")
                ing["metrics_caught_up_after_s"] = await quiet(pipeline.url, project, plan.items)
                log(f"rep {rep}/{plan.reps}: one POST of {plan.max_batch:,} items into a quiet pipeline")
                profiler = Profiler(py_spy if rep == 1 else None, pid, out.with_name(f"{out.stem}-max-batch.prof.txt"),
                                    rate=250)
                big = await max_batch(clients[0], f"{project}-max", plan.max_batch, 100 + rep, pid, profiler)
                log(f"  {big['wall_s']:.2f} s ({big['items_per_s']:,.0f} items/s); all decided after "
                    f"{big['decided_s']:.1f} s")
                big["metrics_caught_up_after_s"] = await quiet(pipeline.url, f"{project}-max", plan.max_batch)
                log(f"rep {rep}/{plan.reps}: reviews, {plan.reviews:,} lease + review")
                with Profiler(py_spy if rep == 1 else None, pid, out.with_name(f"{out.stem}-reviews.prof.txt")):
                    rev = await reviews(clients, project, plan, pid)
                log(f"  {rev['reviews_per_s']:,.1f} reviews/s, review p50 {rev['p50_ms']:.0f} ms, "
                    f"p99 {rev['p99_ms']:.0f} ms; lease p50 {rev['lease_p50_ms']:.0f} ms")
                result = {"baseline": base, "ingest": ing, "max_batch": big, "reviews": rev}
                reps.append({**result, "ratios": ratios(result)})
        finally:
            for client in clients:
                await client.aclose()
            code = await pipeline.stop()
            log(f"stopped (exit status {code})")
    phases = ("baseline", "ingest", "max_batch", "reviews", "ratios")
    summary = {phase: medians([rep[phase] for rep in reps]) for phase in phases}
    return {"plan": plan.__dict__, "machine": machine(), "reps": reps, "median": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small repetition (a smoke test of the benchmark)")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, or 1 with --quick)")
    parser.add_argument("--max-batch", type=int, help="items in the one big POST (default 10,000; 2,000 quick)")
    parser.add_argument("--py-spy", metavar="PATH", help="py-spy executable: profile the first repetition")
    parser.add_argument("--py-spy-gil", action="store_true", help="with --py-spy: sample only the GIL holder")
    parser.add_argument("--out", type=Path, help="where to write the JSON (default benchmarks/results/…)")
    parser.add_argument("--table", type=Path, metavar="JSON", help="only print the table of a saved run")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return
    plan = QUICK if args.quick else FULL
    if args.reps:
        plan = Plan(**{**plan.__dict__, "reps": args.reps})
    if args.max_batch:
        plan = Plan(**{**plan.__dict__, "max_batch": args.max_batch})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or RESULTS / f"bench_api-{'quick-' if args.quick else ''}{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    Profiler.gil_only = args.py_spy_gil
    log(f"plan: {plan}; machine: {machine()}")
    data = asyncio.run(run(plan, args.py_spy, out))
    out.write_text(json.dumps(data, indent=2) + "\n")
    log(f"raw results: {out}")
    print(table(data))


if __name__ == "__main__":
    main()
