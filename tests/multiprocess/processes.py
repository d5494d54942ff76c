"""The four services as separate processes (``labelgate serve <service>``) on a real Kafka broker and a real
MongoDB-protocol server, each on a port of its own: start them, wait until they are ready, and stop them
gracefully (SIGTERM), kill them (SIGKILL) or freeze them (SIGSTOP) one by one."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from labelgate_core.topics import (
    DECISION_MADE,
    GUIDELINE_CHANGED,
    ITEM_SUBMITTED,
    LABEL_FINALIZED,
    LABEL_SCORED,
    REVIEW_SUBMITTED,
    TOPICS,
)

SERVICES = ("review-api", "labeler", "router", "metrics")
SETTINGS_PREFIX = {
    "review-api": "LABELGATE_REVIEW_API_",
    "labeler": "LABELGATE_LABELER_",
    "router": "LABELGATE_ROUTER_",
    "metrics": "LABELGATE_METRICS_",
}
GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "review-api": {"review-api.items": (DECISION_MADE, LABEL_FINALIZED)},
    "labeler": {"labeler.label": (ITEM_SUBMITTED,), "labeler.feedback": (REVIEW_SUBMITTED, GUIDELINE_CHANGED)},
    "router": {"router.decide": (LABEL_SCORED,), "router.feedback": (REVIEW_SUBMITTED,)},
    "metrics": {"metrics.aggregate": tuple(TOPICS)},
}
"""Each service's consumer groups (``<service>.<purpose>``) and the topics each reads, as the services say."""

TOPIC_PARTITIONS = 4
START_TIMEOUT_S = 120.0
"""Generous: the machine that runs the tests may be busy, and a service imports a good deal at start."""


class ServiceStartError(RuntimeError):
    """A service exited, or did not answer /readyz, before it was ready."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def labelgate_command() -> list[str]:
    """``labelgate`` of this interpreter's environment (the project's venv)."""
    beside = Path(sys.executable).parent / "labelgate"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("labelgate")
    return [found] if found else [sys.executable, "-m", "labelgate.cli"]


@dataclass
class ServiceProcess:
    """One service in its own process, restartable on the same port, as an operator would restart it."""

    service: str
    port: int
    env: Mapping[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    stopped: bool = False
    """The test stopped it (SIGTERM or SIGKILL) and has not started it again."""
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.service} was never started")
        return self.process.pid

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready."""
        if self.running:
            raise RuntimeError(f"{self.service} is already running (pid {self.pid})")
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start {self.starts + 1} on port {self.port}\n".encode())
        self._log.flush()
        self.stopped = False
        self.process = subprocess.Popen(
            [*labelgate_command(), "serve", self.service],
            env=dict(self.env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1

    def ready(self) -> bool:
        """Whether /readyz answers 200 now (its store and bus answer, every task of it runs)."""
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            process = self.process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise ServiceStartError(f"{self.service} exited ({code}) before it was ready:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServiceStartError(f"{self.service} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        self.spawn()
        self.wait_ready(timeout_s)

    def send(self, signum: signal.Signals) -> None:
        if self.running:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs; only what was already committed survives."""
        if self.process is None:
            return
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._close_log()

    def terminate(self, timeout_s: float = 60.0) -> tuple[int, float]:
        """SIGTERM, then wait for the graceful stop; returns the exit status and the seconds it took. A process
        still alive after ``timeout_s`` is killed and reported as a failure. (After its graceful shutdown,
        uvicorn raises the signal again, so a clean stop exits with -SIGTERM.)"""
        self.stopped = True
        process = self.process
        if process is None or process.poll() is not None:
            return (0 if process is None else process.returncode), 0.0
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.service} ignored SIGTERM for {timeout_s:.0f} s:\n{self.log_tail()}") from None
        self._close_log()
        return code, time.monotonic() - started

    def stopped_cleanly(self) -> bool:
        """Whether the last run's log ends with a complete graceful shutdown of the app (drained, committed,
        outbox published, store closed) rather than an error."""
        run = self.log_path.read_text(errors="replace").rsplit("--- start ", 1)[-1]
        return "service stopped" in run and "Application shutdown complete" in run and "Traceback" not in run

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class Cluster:
    """The four services of one test session, each in its own process, sharing a Kafka broker and a MongoDB
    server; every service's database is ``<prefix>_<service>``, a prefix of this cluster's own."""

    bootstrap: str
    mongo_url: str
    prefix: str
    log_dir: Path
    env: dict[str, str]
    origin: dict[tuple[str, int], int] = field(default_factory=dict)
    """Per topic partition, its end offset when the cluster started: where this cluster's history begins."""
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def __getitem__(self, service: str) -> ServiceProcess:
        return self.processes[service]

    def url(self, service: str) -> str:
        return self.processes[service].url

    def database(self, service: str) -> str:
        return f"{self.prefix}_{service}"

    @classmethod
    def create(cls, bootstrap: str, mongo_url: str, prefix: str, log_dir: Path) -> Cluster:
        """The cluster's processes (not started yet), each service on a free port."""
        ports = {service: free_port() for service in SERVICES}
        env = cluster_env(bootstrap, mongo_url, prefix, ports)
        cluster = cls(bootstrap, mongo_url, prefix, log_dir, env)
        for service in SERVICES:
            cluster.processes[service] = ServiceProcess(service, ports[service], env, log_dir / f"{service}.log")
        return cluster

    def start(self) -> None:
        """Start every service at once (their start-ups overlap), then wait until each is ready."""
        for process in self.processes.values():
            process.spawn()
        for process in self.processes.values():
            process.wait_ready()

    def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(Exception):
                process.send(signal.SIGCONT)
                process.terminate(30)
            process.kill()

    def check_alive(self) -> None:
        """Fail with the service's log if one of them died on its own."""
        for process in self.processes.values():
            if process.process is not None and process.process.poll() is not None and not process.stopped:
                raise AssertionError(
                    f"{process.service} exited with {process.process.returncode}:\n{process.log_tail()}"
                )

    def logs(self) -> Iterator[str]:
        for process in self.processes.values():
            yield f"--- {process.service} ({process.log_path})\n{process.log_tail()}"


def cluster_env(bootstrap: str, mongo_url: str, prefix: str, ports: Mapping[str, int]) -> dict[str, str]:
    """The environment of every service: this process's, without inherited ``LABELGATE_*`` settings, plus
    Kafka and MongoDB for the single test broker and server, and quick retraining and recalibration."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LABELGATE_")}
    env.update(
        {
            "LABELGATE_BUS": "kafka",
            "LABELGATE_STORE": "mongo",
            "LABELGATE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LABELGATE_KAFKA_REPLICATION_FACTOR": "1",
            "LABELGATE_KAFKA_MIN_INSYNC_REPLICAS": "1",
            "LABELGATE_KAFKA_TOPIC_PARTITIONS": str(TOPIC_PARTITIONS),
            "LABELGATE_MONGO_URL": mongo_url,
            "LABELGATE_MONGO_DATABASE_PREFIX": prefix,
            "LABELGATE_LOG_LEVEL": "INFO",
            "LABELGATE_LOG_FORMAT": "text",
            # A model after the first 20 reviews, and a new one after every 20 more.
            "LABELGATE_LABELER_MIN_TRAIN_EXAMPLES": "20",
            "LABELGATE_LABELER_RETRAIN_EVERY_REVIEWS": "20",
            "LABELGATE_LABELER_RETRAIN_INTERVAL_S": "2",
            "LABELGATE_LABELER_RETRAIN_CHECK_S": "0.5",
            # And a calibration refit soon after the last outcome (by default within 30 s).
            "LABELGATE_ROUTER_CALIBRATION_INTERVAL_S": "2",
        }
    )
    for service, port in ports.items():
        env[f"{SETTINGS_PREFIX[service]}HOST"] = "127.0.0.1"
        env[f"{SETTINGS_PREFIX[service]}PORT"] = str(port)
    return env
