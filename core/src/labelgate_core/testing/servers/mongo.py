"""Runs a real MongoDB-protocol server that supports transactions, for tests, benchmarks and local runs.

Where a Docker engine answers, the server is MongoDB itself in a testcontainers container, started as a
single-node replica set (transactions need one). Elsewhere it is SecantusDB (``secantusd-py``, a dev
dependency), a MongoDB-compatible server that presents itself as a single-node replica set, run as a plain
process on 127.0.0.1 with in-memory storage, so no network and no Docker are needed.

By hand: ``python -m labelgate_core.testing.servers.mongo`` prints the connection URL and keeps the server
running until Ctrl-C.

Environment:
  ``LABELGATE_TEST_SERVERS``        ``local`` (secantusd-py process), ``docker`` (testcontainers) or unset
                                    (docker when ``docker info`` succeeds, else local)
  ``LABELGATE_TEST_MONGO_URL``      use this already running server instead of starting one
  ``LABELGATE_MONGO_IMAGE``         container image for the docker path (default ``DEFAULT_MONGO_IMAGE``)
  ``LABELGATE_MONGO_START_TIMEOUT`` seconds to wait for the server to answer (default 60)
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

log = logging.getLogger(__name__)

DEFAULT_MONGO_IMAGE = "mongo:7.0"
DEFAULT_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 10.0
_LOG_TAIL_LINES = 40
_PORT_ATTEMPTS = 3
_REPLICA_SET = "rs0"


class MongoServerError(RuntimeError):
    """The server did not start, or does not offer what the store needs (a replica set)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def url_for(host: str, port: int) -> str:
    # A direct connection: the driver talks to this one node whatever host names its replica-set config uses
    # (inside a container that name is not reachable from here).
    return f"mongodb://{host}:{port}/?directConnection=true"


def start_timeout() -> float:
    return float(os.environ.get("LABELGATE_MONGO_START_TIMEOUT", DEFAULT_START_TIMEOUT_S))


def _hello(url: str, *, timeout_s: float) -> dict[str, Any]:
    ms = max(int(timeout_s * 1000), 100)
    client: MongoClient[dict[str, Any]] = MongoClient(
        url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms, appname="labelgate-probe"
    )
    try:
        client.admin.command("ping")
        hello: dict[str, Any] = client.admin.command("hello")
        return hello
    finally:
        client.close()


def wait_until_primary(
    url: str, *, timeout_s: float, alive: Callable[[], bool] = lambda: True, describe: Callable[[], str] = str
) -> float:
    """Wait until the server at ``url`` answers a ping as a replica-set primary; returns the seconds waited."""
    started = time.monotonic()
    last_error: Exception | None = None
    while time.monotonic() - started < timeout_s:
        if not alive():
            raise MongoServerError(f"the server exited before it answered\n{describe()}")
        try:
            hello = _hello(url, timeout_s=0.5)
        except PyMongoError as exc:
            last_error = exc
            time.sleep(0.1)
            continue
        if hello.get("setName") and hello.get("isWritablePrimary"):
            return time.monotonic() - started
        last_error = MongoServerError(f"not a writable replica-set primary yet: {hello.get('setName')!r}")
        time.sleep(0.1)
    raise MongoServerError(
        f"no answer from {url} as a replica-set primary within {timeout_s:.0f} s ({last_error})\n{describe()}"
    )


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, have the kernel SIGTERM the server if the thread that started it dies, so a crashed test run
    leaves no server behind. Only from the main thread: a worker thread may exit while the server is wanted."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return set_pdeathsig


def secantus_command() -> list[str]:
    """How to run ``secantusd-py``: the one beside this interpreter (the project's venv) first."""
    beside = Path(sys.executable).parent / "secantusd-py"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("secantusd-py")
    if found:
        return [found]
    raise MongoServerError("secantusd-py not found: install the dev dependencies (the secantusdb package)")


class LocalSecantusServer:
    """SecantusDB on 127.0.0.1 with in-memory storage, for the length of a ``with`` block."""

    def __init__(
        self,
        *,
        port: int | None = None,
        timeout_s: float | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._requested_port = port
        self.port = port or 0
        self._timeout_s = start_timeout() if timeout_s is None else timeout_s
        self._extra_args = list(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self.startup_s: float | None = None

    @property
    def url(self) -> str:
        return url_for("127.0.0.1", self.port)

    @property
    def log_path(self) -> Path:
        if self._workdir is None:
            raise MongoServerError("server not started")
        return self._workdir / "secantusd.log"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="labelgate-mongo-"))
        # An empty config file: the server would otherwise pick up a secantusd.toml from the working directory.
        (self._workdir / "secantusd.toml").write_text("")
        attempts = 1 if self._requested_port else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self.port = self._requested_port or free_port()
            try:
                self._spawn_and_wait()
                return
            except MongoServerError:
                self._terminate()
                # Another process may have taken the free port between our probe and the server's bind.
                if attempt < attempts and "address already in use" in _tail(self.log_path).lower():
                    continue
                self._cleanup()
                raise

    def _spawn_and_wait(self) -> None:
        if self._workdir is None:
            raise MongoServerError("server not started")
        command = [
            *secantus_command(),
            "--config", str(self._workdir / "secantusd.toml"),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--storage-path", ":memory:",
            "--log-level", "INFO",
            *self._extra_args,
        ]  # fmt: skip
        started = time.monotonic()
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
                preexec_fn=_die_with_parent(),
            )
        wait_until_primary(self.url, timeout_s=self._timeout_s, alive=self.running, describe=self._describe)
        self.startup_s = time.monotonic() - started
        log.info("secantusd-py answered on %s after %.2f s", self.url, self.startup_s)

    def _describe(self) -> str:
        code = self._proc.poll() if self._proc is not None else None
        state = "running" if code is None else f"exit code {code}"
        tail = _tail(self.log_path) if self._workdir is not None else ""
        return f"secantusd-py ({state}); last lines of {self._workdir}/secantusd.log:\n{tail}"

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(_STOP_TIMEOUT_S)

    def _cleanup(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def stop(self) -> None:
        self._terminate()
        self._cleanup()

    def __enter__(self) -> LocalSecantusServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


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
        raise MongoServerError(f"LABELGATE_TEST_SERVERS={mode!r}: expected 'local' or 'docker'")
    return "docker" if docker_available() else "local"


def _initiate_replica_set(url: str, *, timeout_s: float) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=int(timeout_s * 1000))
    try:
        config = {"_id": _REPLICA_SET, "members": [{"_id": 0, "host": "localhost:27017"}]}
        try:
            client.admin.command("replSetInitiate", config)
        except OperationFailure as exc:
            if exc.code != 23:  # AlreadyInitialized
                raise
    finally:
        client.close()


@contextlib.contextmanager
def _docker_mongo() -> Iterator[str]:
    # Imported lazily: testcontainers is only needed where a Docker engine runs. The generic container, not
    # testcontainers' MongoDbContainer: that one turns on authentication, which a replica set then refuses
    # to run without a key file.
    module = importlib.import_module("testcontainers.core.container")
    image = os.environ.get("LABELGATE_MONGO_IMAGE", DEFAULT_MONGO_IMAGE)
    container = module.DockerContainer(image).with_exposed_ports(27017)
    container = container.with_command(f"--replSet {_REPLICA_SET} --bind_ip_all")
    with container as running:
        url = url_for(running.get_container_host_ip(), int(running.get_exposed_port(27017)))
        timeout_s = start_timeout()
        deadline = time.monotonic() + timeout_s
        while True:  # the process inside needs a moment before it accepts connections
            try:
                _initiate_replica_set(url, timeout_s=2.0)
                break
            except PyMongoError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        wait_until_primary(url, timeout_s=max(deadline - time.monotonic(), 5.0))
        yield url


@contextlib.contextmanager
def mongo_for_tests() -> Iterator[str]:
    """A running MongoDB-protocol replica set for the length of the block; yields its connection URL."""
    external = os.environ.get("LABELGATE_TEST_MONGO_URL")
    if external:
        yield external
        return
    if server_mode() == "docker":
        with _docker_mongo() as url:
            yield url
        return
    with LocalSecantusServer() as server:
        yield server.url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labelgate_core.testing.servers.mongo",
        description="Run SecantusDB (a MongoDB-compatible single-node replica set) on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=None, help="client port (default: a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with LocalSecantusServer(port=args.port) as server:
        print(server.url, flush=True)
        log.info("server log: %s; Ctrl-C stops the server", server.log_path)
        while not stop.is_set() and server.running():
            stop.wait(0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
