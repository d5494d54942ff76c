"""Runs a real single-node Apache Kafka broker (KRaft) for tests, benchmarks and local runs.

Where a Docker engine answers, the broker is a testcontainers Kafka container. Elsewhere the broker's jars are
fetched once from Maven Central (``deploy/kafka/pom.xml``) into ``~/.cache/labelgate/kafka-<version>/`` and
the broker runs as a plain ``java`` process on 127.0.0.1, with its storage in a fresh temporary folder, so
later runs need no network at all.

By hand: ``python -m labelgate_core.testing.servers.kafka`` prints the bootstrap address and keeps the broker
running until Ctrl-C.

Environment:
  ``LABELGATE_TEST_SERVERS``        ``local`` (java process), ``docker`` (testcontainers) or unset (docker
                                    when ``docker info`` succeeds, else local)
  ``LABELGATE_TEST_KAFKA_BOOTSTRAP`` use this already running broker instead of starting one
  ``LABELGATE_KAFKA_VERSION``       Kafka version of the jars (default ``DEFAULT_KAFKA_VERSION``)
  ``LABELGATE_KAFKA_IMAGE``         container image for the docker path
  ``LABELGATE_CACHE_DIR``           cache root (default ``~/.cache/labelgate``)
  ``LABELGATE_KAFKA_POM``           the pom naming the jars (default: ``deploy/kafka/pom.xml`` of this tree)
  ``LABELGATE_KAFKA_START_TIMEOUT`` seconds to wait for the broker to answer (default 120)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import importlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

DEFAULT_KAFKA_VERSION = "4.1.1"
DEFAULT_START_TIMEOUT_S = 120.0
_STOP_TIMEOUT_S = 20.0
_FETCH_TIMEOUT_S = 900.0
_LOG_TAIL_LINES = 40

# Settings of a throwaway single-node broker; production topic settings live in deploy/kafka/README.md.
BROKER_DEFAULTS: dict[str, str] = {
    # Topics are created by the bus adapter, with the partitions and replication it is configured with.
    "auto.create.topics.enable": "false",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    # A group's first member gets its partitions at once instead of after the default 3 s wait.
    "group.initial.rebalance.delay.ms": "0",
    # Lets tests use short session timeouts so that a vanished member is noticed quickly.
    "group.min.session.timeout.ms": "500",
    "num.partitions": "1",
    # The log cleaner allocates its whole dedupe buffer (128 MB by default) when it starts: with a small test
    # heap that alone can end the broker with an OutOfMemoryError. A test broker compacts only small topics.
    "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
    "num.network.threads": "2",
    "num.io.threads": "4",
}

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class KafkaServerError(RuntimeError):
    """The broker could not be fetched, formatted or started."""


# -- where things live -----------------------------------------------------------------------------------


def kafka_version() -> str:
    return os.environ.get("LABELGATE_KAFKA_VERSION", DEFAULT_KAFKA_VERSION)


def cache_root() -> Path:
    configured = os.environ.get("LABELGATE_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "labelgate"


def find_pom() -> Path:
    """``deploy/kafka/pom.xml`` of the source tree this module was loaded from."""
    configured = os.environ.get("LABELGATE_KAFKA_POM")
    if configured:
        return Path(configured)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "deploy" / "kafka" / "pom.xml"
        if candidate.is_file():
            return candidate
    raise KafkaServerError(
        "deploy/kafka/pom.xml not found above this module; set LABELGATE_KAFKA_POM to its path"
    )


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise KafkaServerError("java (17 or newer) is needed to run the Kafka broker and was not found")
    return found


def fetch_jars(version: str | None = None) -> Path:
    """The folder holding the broker's class path, fetched with Maven on first use (then offline)."""
    version = version or kafka_version()
    home = cache_root() / f"kafka-{version}"
    libs = home / "libs"
    done = home / ".complete"
    if done.is_file():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching the same version
        if done.is_file():
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise KafkaServerError(f"Maven (mvn) is needed once to fetch the Kafka {version} jars into {libs}")
        staging = Path(tempfile.mkdtemp(prefix="libs-", dir=home))
        command = [
            mvn, "-q", "-B", "-f", str(find_pom()), f"-Dkafka.version={version}",
            "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
        ]
        log.info("fetching the Kafka %s jars into %s", version, libs)
        started = time.monotonic()
        try:
            result = subprocess.run(  # noqa: S603 - fixed argument list, no shell
                command, capture_output=True, text=True, timeout=_FETCH_TIMEOUT_S, check=False
            )
            if result.returncode != 0 or not any(staging.glob(f"kafka_2.13-{version}.jar")):
                raise KafkaServerError(
                    f"fetching the Kafka {version} jars failed (exit {result.returncode}):\n"
                    f"{' '.join(command)}\n{_tail(result.stdout + result.stderr)}"
                )
            shutil.rmtree(libs, ignore_errors=True)
            staging.rename(libs)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        done.write_text(f"{version}\n")
        log.info("fetched the Kafka %s jars in %.1f s", version, time.monotonic() - started)
    return libs


# -- the broker process ----------------------------------------------------------------------------------


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's ``Uuid``)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):  # Kafka refuses ids that look like a command-line flag
            return candidate


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class LocalKafkaBroker:
    """A Kafka broker+controller (KRaft, one node) run from the jars as a child ``java`` process."""

    def __init__(
        self,
        *,
        port: int | None = None,
        version: str | None = None,
        heap: str = "512m",
        start_timeout_s: float | None = None,
        extra_properties: Mapping[str, str] | None = None,
        keep_data: bool = False,
    ) -> None:
        self.version = version or kafka_version()
        self._requested_port = port
        self._heap = heap
        self._start_timeout_s = start_timeout_s or float(
            os.environ.get("LABELGATE_KAFKA_START_TIMEOUT", DEFAULT_START_TIMEOUT_S)
        )
        self._extra = dict(extra_properties or {})
        self._keep_data = keep_data
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self.port = 0
        self.started_in_s = 0.0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        if self._workdir is None:
            raise KafkaServerError("the broker is not running")
        return self._workdir / "broker.log"

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the broker's log, preceded by its first ERROR line (the cause, usually)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, KafkaServerError):
            return "(no broker log)"
        first_error = next((line for line in text.splitlines() if " ERROR " in line), None)
        tail = _tail(text, lines)
        return f"first error: {first_error}\n...\n{tail}" if first_error and first_error not in tail else tail

    def __enter__(self) -> LocalKafkaBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        libs = fetch_jars(self.version)
        java = _java()
        started = time.monotonic()
        attempts = 1 if self._requested_port else 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(java, libs, deadline=started + self._start_timeout_s)
                break
            except KafkaServerError as exc:
                # A free port can be taken by another process between our probe and the broker's bind.
                if attempt == attempts or "Address already in use" not in str(exc):
                    raise
                log.warning("a port of the Kafka broker was taken meanwhile; retrying with other ports")
        self.started_in_s = time.monotonic() - started
        log.info("Kafka %s broker at %s answered after %.1f s", self.version, self.bootstrap, self.started_in_s)

    def _start_once(self, java: str, libs: Path, *, deadline: float) -> None:
        self._workdir = workdir = Path(tempfile.mkdtemp(prefix="labelgate-kafka-"))
        try:
            self.port = self._requested_port or free_port()
            config = self._write_config(workdir, controller_port=free_port())
            jvm = [java, f"-Xmx{self._heap}", "-Xms128m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                   "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
                   f"-Dlog4j2.configurationFile={workdir / 'log4j2.properties'}", "-cp", f"{libs}/*"]
            self._format(jvm, config)
            with (workdir / "broker.log").open("wb") as out:
                self._process = subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
                    [*jvm, "kafka.Kafka", str(config)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=_die_with_parent(),
                )
            self._wait_until_ready(self._process, deadline)
        except KafkaServerError:
            self._stop(keep_data=True)  # the error names the broker's log: keep it readable
            raise
        except BaseException:
            self.stop()
            raise

    def _write_config(self, workdir: Path, controller_port: int) -> Path:
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
            "log.dirs": str(workdir / "data"),
            **BROKER_DEFAULTS,
            **self._extra,
        }
        config = workdir / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        (workdir / "log4j2.properties").write_text(_LOG4J2)
        return config

    def _format(self, jvm: list[str], config: Path) -> None:
        command = [*jvm, "kafka.tools.StorageTool", "format", "--standalone",
                   "--cluster-id", new_cluster_id(), "--config", str(config)]
        result = subprocess.run(  # noqa: S603 - fixed argument list, no shell
            command, capture_output=True, text=True, timeout=self._start_timeout_s, check=False
        )
        if result.returncode != 0:
            raise KafkaServerError(
                f"formatting the Kafka storage failed (exit {result.returncode}):\n"
                f"{_tail(result.stdout + result.stderr)}"
            )

    def _wait_until_ready(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        last_error = "no answer yet"
        while True:
            code = process.poll()
            if code is not None:
                raise KafkaServerError(
                    f"the Kafka broker exited with code {code} before it answered; log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            if _port_open(self.port):
                try:
                    if _answers_metadata(self.bootstrap, timeout_s=max(1.0, min(10.0, deadline - time.monotonic()))):
                        return
                    last_error = "the metadata response listed no broker"
                except Exception as exc:  # the broker is still coming up
                    last_error = repr(exc)
            if time.monotonic() >= deadline:
                raise KafkaServerError(
                    f"the Kafka broker at {self.bootstrap} did not answer a metadata request within "
                    f"{self._start_timeout_s:.0f} s ({last_error}); log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if the broker has not exited in time."""
        self._stop(keep_data=self._keep_data)

    def _stop(self, *, keep_data: bool) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("the Kafka broker ignored SIGTERM for %.0f s; killing it", _STOP_TIMEOUT_S)
                process.kill()
                process.wait()
        workdir, self._workdir = self._workdir, None
        if workdir is not None and not keep_data:
            shutil.rmtree(workdir, ignore_errors=True)


def _die_with_parent() -> Any:
    """On Linux, ask the kernel to SIGTERM the broker if the thread that started it dies, so a crashed test
    run leaves no broker behind. Only from the main thread: a worker thread may exit while the broker is
    still wanted."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return set_pdeathsig


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _answers_metadata(bootstrap: str, *, timeout_s: float) -> bool:
    """True when the broker answers a metadata request naming at least one broker. Runs its own event loop
    in a thread, so it works whether or not the caller is inside one."""
    outcome: list[bool | BaseException] = []

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="labelgate-probe", request_timeout_ms=int(timeout_s * 1000)
        )
        try:
            await asyncio.wait_for(admin.start(), timeout_s)
            cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
            return bool(cluster.get("brokers"))
        finally:
            await admin.close()

    def run() -> None:
        try:
            outcome.append(asyncio.run(probe()))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name="kafka-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 5)
    if not outcome:
        raise TimeoutError("metadata probe did not finish")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


# -- choosing how to run it --------------------------------------------------------------------------------


def docker_available() -> bool:
    docker = shutil.which("docker")
    if not docker:
        return False
    try:
        return subprocess.run(  # noqa: S603 - fixed argument list, no shell
            [docker, "info"], capture_output=True, timeout=15, check=False
        ).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def server_mode() -> str:
    mode = os.environ.get("LABELGATE_TEST_SERVERS", "").strip().lower()
    if mode in {"local", "docker"}:
        return mode
    if mode:
        raise KafkaServerError(f"LABELGATE_TEST_SERVERS={mode!r}: expected 'local' or 'docker'")
    return "docker" if docker_available() else "local"


@contextlib.contextmanager
def _docker_kafka() -> Iterator[str]:
    # Imported lazily: testcontainers is only needed where a Docker engine runs.
    try:
        module = importlib.import_module("testcontainers.kafka")
    except ImportError as exc:
        raise KafkaServerError(
            "running Kafka in Docker needs the testcontainers package (pip install 'testcontainers[kafka]'); "
            "LABELGATE_TEST_SERVERS=local runs the broker from its jars instead"
        ) from exc
    image = os.environ.get("LABELGATE_KAFKA_IMAGE")
    container = module.KafkaContainer(image) if image else module.KafkaContainer()
    container = container.with_kraft()
    for key, value in BROKER_DEFAULTS.items():
        container = container.with_env("KAFKA_" + key.upper().replace(".", "_"), value)
    with container as running:
        yield str(running.get_bootstrap_server())


@contextlib.contextmanager
def kafka_for_tests() -> Iterator[str]:
    """A running Kafka broker for the length of the block; yields its bootstrap address."""
    external = os.environ.get("LABELGATE_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    if server_mode() == "docker":
        with _docker_kafka() as bootstrap:
            yield bootstrap
        return
    with LocalKafkaBroker() as broker:
        yield broker.bootstrap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labelgate_core.testing.servers.kafka",
        description="Run a single-node Apache Kafka broker (KRaft) on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=None, help="client port (default: a free one)")
    parser.add_argument("--kafka-version", default=None, help=f"default: {kafka_version()}")
    parser.add_argument("--heap", default="512m", help="broker JVM heap (default: 512m)")
    parser.add_argument("--keep-data", action="store_true", help="keep the storage folder on exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    broker = LocalKafkaBroker(port=args.port, version=args.kafka_version, heap=args.heap, keep_data=args.keep_data)
    with broker:
        print(broker.bootstrap, flush=True)
        log.info("broker log: %s; Ctrl-C stops the broker", broker.log_path)
        while not stop.is_set() and broker.running():
            stop.wait(0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
