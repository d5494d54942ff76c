"""A test double of an OpenAI-compatible chat-completions server, for tests and benchmarks only.

It is not a model: it picks the first schema label whose name occurs in the item's text (every such label
for multi-label), answers in the JSON the request asked for, returns made-up log-probabilities, counts the
tokens it "bills", and injects faults on demand (429 with Retry-After, 500, a stall past the client's
timeout, malformed JSON, a label outside the schema). An item that says "ignore previous instructions"
makes it answer with a label outside the schema, as a model that obeyed an injected instruction would."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

ITEM = re.compile(r"<item>\n(.*)\n</item>", re.DOTALL)
LISTED = re.compile(r"^- ([^:\n]+)", re.MULTILINE)
INJECTION = "ignore previous instructions"


@dataclass
class DoubleConfig:
    latency_s: float = 0.0
    modes: frozenset[str] = frozenset({"json_schema", "json_object_schema", "json"})
    """Structured-output modes the endpoint accepts; others get a 400."""
    logprobs: bool = True
    label_probability: float = 0.8
    """Probability the made-up log-probabilities give the chosen label's first token."""
    verbalized: float = 0.7
    honour_n: bool = True
    cached_tokens: int = 0
    fault_rate: float = 0.0
    fault_requests: int = 0
    """The first this-many requests fail with probability ``fault_rate`` (a spell of trouble)."""
    faults: tuple[str, ...] = ("429", "500", "timeout")
    retry_after_s: float = 0.05
    stall_s: float = 1.5
    seed: int = 7
    per_model_choice: dict[str, str] = field(default_factory=dict)
    """model → "first" (default) or "last": which matching label that model picks."""


@dataclass
class Billed:
    model: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int


class OpenAIDouble:
    def __init__(self, config: DoubleConfig | None = None) -> None:
        self.config = config or DoubleConfig()
        self.requests: list[dict[str, Any]] = []
        self.billed: list[Billed] = []
        self.outcomes: list[str] = []
        self.script: list[str] = []
        """Forced outcomes for the next requests, in order: 429, 500, timeout, malformed, unknown_label, ok."""
        self.gate: threading.Event | None = None
        """When set to an Event, each request waits for it (tests that hold a call open)."""
        self._rng = random.Random(self.config.seed)
        self._lock = threading.Lock()
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self._completions)

    async def _completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self._lock:
            index = len(self.requests)
            self.requests.append(body)
            forced = self.script.pop(0) if self.script else None
            if forced is None and index < self.config.fault_requests and self._rng.random() < self.config.fault_rate:
                forced = self._rng.choice(self.config.faults)
        if self.gate is not None:
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
        if self.config.latency_s:
            await asyncio.sleep(self.config.latency_s)
        outcome = forced or "ok"
        self.outcomes.append(outcome)
        if outcome == "429":
            return JSONResponse({"error": {"message": "rate limited", "type": "rate_limit"}}, status_code=429,
                                headers={"retry-after": str(self.config.retry_after_s)})
        if outcome == "500":
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=500)
        if outcome == "timeout":
            await asyncio.sleep(self.config.stall_s)
            return JSONResponse({"error": {"message": "too late"}}, status_code=504)
        mode, schema = _mode(body.get("response_format"))
        if mode not in self.config.modes:
            self.outcomes[-1] = "unsupported"
            return JSONResponse({"error": {"message": f"response_format {mode} is not supported"}}, status_code=400)
        return JSONResponse(self._answer(body, schema, outcome))

    def _answer(self, body: dict[str, Any], schema: dict[str, Any] | None, outcome: str) -> dict[str, Any]:
        messages = body["messages"]
        labels = _labels(schema, messages[0]["content"])
        system = messages[0]["content"]
        multi = (schema is not None and "labels" in schema.get("properties", {})) or '"labels"' in system
        item = ITEM.findall(messages[-1]["content"])
        text = item[-1] if item else messages[-1]["content"]
        matching = [label for label in labels if label.lower() in text.lower()]
        if self.config.per_model_choice.get(body["model"]) == "last":
            matching = matching[::-1]
        chosen = matching[0] if matching else (labels[0] if labels else "none")
        if outcome == "unknown_label" or INJECTION in text.lower():
            chosen = "HACKED"
        prefix = '{"labels": ["' if multi else '{"label": "'
        verbal = "confidence" in (schema or {}).get("properties", {}) or '"confidence"' in messages[0]["content"]
        tail = f', "confidence": {self.config.verbalized}' if verbal else ""
        if multi:
            chosen_all = matching or []
            content = json.dumps({"labels": chosen_all} | ({"confidence": self.config.verbalized} if verbal else {}))
        else:
            content = f'{prefix}{chosen}"{tail}}}'
        if outcome == "malformed":
            content = content[: len(content) // 2]
        n = int(body.get("n") or 1) if self.config.honour_n else 1
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content},
                                  "finish_reason": "stop"}
        if body.get("logprobs") and self.config.logprobs and not multi and outcome != "malformed":
            choice["logprobs"] = {"content": self._logprobs(prefix, chosen, content, labels,
                                                            int(body.get("top_logprobs") or 0))}
        else:
            choice["logprobs"] = None
        prompt_tokens = sum(len(m["content"]) for m in messages) // 4
        cached = min(self.config.cached_tokens, prompt_tokens)
        usage = Billed(body["model"], prompt_tokens, cached, len(content) // 4 + 1)
        with self._lock:
            self.billed.append(usage)
        return {
            "id": f"chatcmpl-{len(self.billed)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [choice | {"index": i} for i in range(n)],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
                "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            },
        }

    def _logprobs(self, prefix: str, chosen: str, content: str, labels: list[str], top: int) -> list[dict[str, Any]]:
        p = self.config.label_probability
        others = [label for label in labels if label != chosen]
        alternatives = [(chosen, math.log(p))]
        alternatives += [(label, math.log((1 - p) / max(len(others), 1))) for label in others]
        alternatives += [("maybe", math.log(1e-4))]
        tokens = [(prefix, 0.0), (chosen, math.log(p)), (content[len(prefix) + len(chosen) :], 0.0)]
        out = []
        for i, (token, logprob) in enumerate(tokens):
            alts = alternatives[:top] if i == 1 else [(token, logprob)]
            out.append({"token": token, "logprob": logprob, "bytes": None,
                        "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in alts]})
        return out


def _mode(response_format: dict[str, Any] | None) -> tuple[str, dict[str, Any] | None]:
    if not response_format:
        return "json", None
    if response_format.get("type") == "json_schema":
        return "json_schema", response_format["json_schema"]["schema"]
    if response_format.get("type") == "json_object":
        return ("json_object_schema", response_format["schema"]) if "schema" in response_format else ("json", None)
    return str(response_format.get("type")), None


def _labels(schema: dict[str, Any] | None, system: str) -> list[str]:
    if schema is not None:
        props = schema["properties"]
        spec = props["labels"]["items"] if "labels" in props else props["label"]
        return [str(x) for x in spec["enum"]]
    return [m.strip() for m in LISTED.findall(system)]


class ServedDouble:
    """The double on a free local port, in a thread of its own (its latency never blocks the test's loop)."""

    def __init__(self, double: OpenAIDouble) -> None:
        self.double = double
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(double.app, log_level="warning", lifespan="off",
                                                    limit_concurrency=10_000, backlog=4096))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ServedDouble:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the OpenAI test double did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
