"""`labelgate run` as a real subprocess: start it on a free port with a data folder and settings, wait until
it is ready, and stop it gracefully (SIGTERM) or kill it outright (SIGKILL). Whatever happens, the process is
reaped: ``running_pipeline`` kills it on the way out if it is still alive."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import IO

import httpx

QUIET = {"LABELGATE_LOG_LEVEL": "WARNING"}
"""The services log only warnings and errors unless a caller asks for more."""

_PORT_ATTEMPTS = 3


class PipelineStartError(RuntimeError):
    """The process exited, or did not become ready, before it answered /readyz."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pipeline_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any inherited ``LABELGATE_*`` setting (a developer's exported
    ``LABELGATE_BUS=kafka`` must not change what a test runs), plus quiet logs and ``overrides``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LABELGATE_")}
    env.update(QUIET)
    env.update(overrides or {})
    return env


class PipelineProcess:
    """One embedded pipeline (all four services) in its own process, restartable on the same data folder and
    port, the way an operator would restart it after a crash."""

    def __init__(
        self,
        data_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.env = pipeline_env(env)
        self.port = port or free_port()
        self.log_path = log_path or data_dir.with_name(f"{data_dir.name}.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start {self.starts + 1} on port {self.port}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "labelgate.cli", "run", "--port", str(self.port), "--data-dir", str(self.data_dir)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1

    async def start(self, timeout_s: float = 120.0) -> None:
        """Start the process and return once /readyz answers 200. A port taken in the meantime by someone
        else is retried on another one, on the first start only (a restart keeps its clients' URL)."""
        if self.running:
            raise RuntimeError(f"the pipeline is already running (pid {self.pid})")
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._spawn()
            try:
                await self._wait_ready(timeout_s)
                return
            except PipelineStartError:
                port_taken = "address already in use" in self.log_tail().lower()
                if not port_taken or self.starts > 1 or attempt == _PORT_ATTEMPTS:
                    raise
                self.port = free_port()
                self.starts = 0

    async def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0) as http:
            while True:
                process = self.process
                assert process is not None
                if process.poll() is not None:
                    self._close_log()
                    raise PipelineStartError(
                        f"labelgate run exited with {process.returncode} before it was ready:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    self.kill()
                    raise PipelineStartError(f"not ready after {timeout_s:.0f}s:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is flushed beyond what was already committed."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._close_log()

    async def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait for the graceful stop (drain, commit, publish the outbox); returns the exit
        status, which is ``-SIGTERM`` after a clean stop too: uvicorn re-raises the signal it handled once its
        shutdown is done. A process still alive after ``timeout_s`` is killed and the stop reported as failed."""
        process = self.process
        if process is None or process.poll() is not None:
            self._close_log()
            return process.returncode if process is not None else 0
        process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"labelgate run ignored SIGTERM for {timeout_s:.0f}s:\n{self.log_tail()}") from None
        self._close_log()
        return code

    def log_tail(self, lines: int = 40) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.asynccontextmanager
async def running_pipeline(
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    timeout_s: float = 120.0,
) -> AsyncIterator[PipelineProcess]:
    """A started pipeline; on the way out it is stopped gracefully if still running, and killed if that fails
    or the block raised."""
    pipeline = PipelineProcess(data_dir, env=env, log_path=log_path)
    try:
        await pipeline.start(timeout_s)
        yield pipeline
    except BaseException:
        pipeline.kill()
        raise
    else:
        if pipeline.running:
            await pipeline.stop()
    finally:
        pipeline.kill()
