"""A test double of an OpenAI-compatible chat-completions server, for tests and benchmarks only.

It is not a model: it picks the first schema label whose name occurs in the item's text (every such label
for multi-label, as a yes/no per label), marks as entities the fixed phrases of ``DoubleConfig.entities``
wherever they occur, and answers boxes requests with the fixed boxes of ``DoubleConfig.boxes`` whatever the
image. It answers in the JSON the request asked for, returns made-up log-probabilities, counts the tokens it
"bills", and injects faults on demand (429 with Retry-After, 500, a stall past the client's timeout,
malformed JSON, a label outside the schema, entity offsets off by one, a box outside any image). An item that
says "ignore previous instructions" makes it answer with a label outside the schema, as a model that obeyed
an injected instruction would."""

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
    label_probabilities: dict[str, float] = field(default_factory=dict)
    """Per label, the probability the made-up log-probabilities give the chosen answer (multi-label yes/no,
    entity type, box label); ``label_probability`` for the others."""
    entities: dict[str, str] = field(default_factory=lambda: {
        "Alice Smith": "PER", "Bob Jones": "PER", "Paris": "LOC", "Oslo": "LOC", "Acme Corp": "ORG",
    })
    """Phrase → entity type: every occurrence of a phrase whose type the request allows is an entity."""
    boxes: tuple[tuple[str, float, float, float, float], ...] = (("cat", 10, 20, 100, 80), ("dog", 150, 40, 60, 60))
    """(label, x, y, width, height): the boxes proposed for any image (those whose label the request allows)."""
    disagree_every: int = 0
    """When set, every this-many-th choice of a request (the last of each group) drops its last entity, box or
    present label: sampled answers then disagree."""


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
        self.headers: list[dict[str, str]] = []
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
            self.headers.append(dict(request.headers))
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
        system = messages[0]["content"]
        kind = _kind(schema, system)
        labels = _labels(schema, kind, system)
        last = _text_of(messages[-1]["content"])
        item = ITEM.findall(last)
        text = item[-1] if item else last
        if kind in ("entities", "boxes", "membership"):
            verbal = _verbal(schema, kind, system)
            return self._structured(body, kind, labels, text, verbal, outcome)
        multi = kind == "multi"
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
        return self._reply(body, [choice | {"index": i} for i in range(n)], len(content))

    def _reply(self, body: dict[str, Any], choices: list[dict[str, Any]], output_chars: int) -> dict[str, Any]:
        prompt_tokens = sum(len(_text_of(m["content"])) for m in body["messages"]) // 4
        cached = min(self.config.cached_tokens, prompt_tokens)
        usage = Billed(body["model"], prompt_tokens, cached, output_chars // 4 + 1)
        with self._lock:
            self.billed.append(usage)
        return {
            "id": f"chatcmpl-{len(self.billed)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": choices,
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
                "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            },
        }

    def _structured(
        self, body: dict[str, Any], kind: str, labels: list[str], text: str, verbal: bool, outcome: str
    ) -> dict[str, Any]:
        """Entities, boxes and multi-label (yes/no per label) answers, one per choice."""
        n = int(body.get("n") or 1) if self.config.honour_n else 1
        hacked = outcome == "unknown_label" or INJECTION in text.lower()
        every = self.config.disagree_every
        choices: list[dict[str, Any]] = []
        chars = 0
        for i in range(n):
            drop = every > 0 and i % every == every - 1
            data, points = self._content(kind, labels, text, verbal, outcome, hacked=hacked, drop=drop)
            content = json.dumps(data)
            if outcome == "malformed":
                content = content[: len(content) // 2]
            logprobs = None
            if body.get("logprobs") and self.config.logprobs and outcome != "malformed":
                logprobs = {"content": _tokens(content, points(content), int(body.get("top_logprobs") or 0))}
            choices.append({"index": i, "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop", "logprobs": logprobs})
            chars += len(content)
        return self._reply(body, choices, chars)

    def _p(self, label: str) -> float:
        return self.config.label_probabilities.get(label, self.config.label_probability)

    def _content(
        self, kind: str, labels: list[str], text: str, verbal: bool, outcome: str, *, hacked: bool, drop: bool
    ) -> tuple[dict[str, Any], Any]:
        """The answer and a function of its JSON text giving the (position, chosen, alternatives) of every value
        whose made-up log-probabilities carry confidence."""
        if kind == "membership":
            present = [label for label in labels if label.lower() in text.lower()]
            if drop and present:
                present = present[:-1]
            said = {label: label in present for label in labels}
            if hacked:
                said["HACKED"] = True
            data: dict[str, Any] = {"labels": said}
            if verbal:
                data["confidence"] = dict.fromkeys(labels, self.config.verbalized)

            def membership(content: str) -> list[tuple[int, str, list[tuple[str, float]]]]:
                out = []
                opened = content.index('"labels": {')
                for label, value in said.items():
                    at = content.index(json.dumps(label) + ": ", opened) + len(json.dumps(label)) + 2
                    chosen, other = ("true", "false") if value else ("false", "true")
                    p = self._p(label)
                    out.append((at, chosen, [(chosen, math.log(p)), (other, math.log(1 - p))]))
                return out

            return data, membership
        if kind == "entities":
            found = sorted(
                (m.start(), phrase, kind_)
                for phrase, kind_ in self.config.entities.items()
                if kind_ in labels
                for m in re.finditer(re.escape(phrase), text)
            )
            if drop and found:
                found = found[:-1]
            entities = []
            for start, phrase, type_ in found:
                shift = 1 if outcome == "shifted_offsets" else 0
                entity: dict[str, Any] = {"text": phrase, "start": start + shift, "end": start + len(phrase) + shift,
                                          "type": "HACKED" if hacked else type_}
                if verbal:
                    entity["confidence"] = self.config.verbalized
                entities.append(entity)
            return {"entities": entities}, self._values_at('"type": "', [e["type"] for e in entities], labels)
        boxes = [b for b in self.config.boxes if b[0] in labels]
        if drop and boxes:
            boxes = boxes[:-1]
        out_boxes = []
        for k, (label, x, y, width, height) in enumerate(boxes):
            box: dict[str, Any] = {"label": "HACKED" if hacked else label, "x": x, "y": y, "width": width,
                                   "height": height}
            if outcome == "out_of_bounds" and k == 0:
                box["x"] = 100_000
            if verbal:
                box["confidence"] = self.config.verbalized
            out_boxes.append(box)
        return {"boxes": out_boxes}, self._values_at('"label": "', [b["label"] for b in out_boxes], labels)

    def _values_at(self, key: str, chosen: list[str], labels: list[str]) -> Any:
        def points(content: str) -> list[tuple[int, str, list[tuple[str, float]]]]:
            out = []
            at = 0
            for value in chosen:
                at = content.index(key, at) + len(key)
                p = self._p(value)
                others = [label for label in labels if label != value]
                alternatives = [(value, math.log(p))]
                alternatives += [(label, math.log((1 - p) / max(len(others), 1))) for label in others]
                out.append((at, value, alternatives))
            return out

        return points

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


def _text_of(content: Any) -> str:
    """A message's text (the text parts of a message that also carries an image)."""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")


def _kind(schema: dict[str, Any] | None, system: str) -> str:
    if schema is not None:
        props = schema["properties"]
        for kind in ("entities", "boxes"):
            if kind in props:
                return kind
        if "labels" in props:
            return "membership" if props["labels"].get("type") == "object" else "multi"
        return "single"
    for kind in ("entities", "boxes"):
        if f'"{kind}"' in system:
            return kind
    if '"labels": {' in system:
        return "membership"
    return "multi" if '"labels"' in system else "single"


def _labels(schema: dict[str, Any] | None, kind: str, system: str) -> list[str]:
    if schema is None:
        return [m.strip() for m in LISTED.findall(system)]
    props = schema["properties"]
    if kind == "entities":
        return [str(x) for x in props["entities"]["items"]["properties"]["type"]["enum"]]
    if kind == "boxes":
        return [str(x) for x in props["boxes"]["items"]["properties"]["label"]["enum"]]
    if kind == "membership":
        return [str(x) for x in props["labels"]["properties"]]
    spec = props["labels"]["items"] if "labels" in props else props["label"]
    return [str(x) for x in spec["enum"]]


def _verbal(schema: dict[str, Any] | None, kind: str, system: str) -> bool:
    if schema is None:
        return '"confidence"' in system
    props = schema["properties"]
    if kind in ("entities", "boxes"):
        return "confidence" in props[kind]["items"]["properties"]
    return "confidence" in props


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


def _tokens(content: str, points: list[tuple[int, str, list[tuple[str, float]]]], top: int) -> list[dict[str, Any]]:
    """Made-up tokens of ``content``: each value of interest is one token with its alternatives; the text
    between values is one token each, certain."""
    out: list[dict[str, Any]] = []
    at = 0
    for position, value, alternatives in sorted(points):
        if position > at:
            piece = content[at:position]
            out.append({"token": piece, "logprob": 0.0, "bytes": None,
                        "top_logprobs": [{"token": piece, "logprob": 0.0, "bytes": None}]})
        tops = [{"token": t, "logprob": lp, "bytes": None} for t, lp in alternatives[: max(top, 1)]]
        out.append({"token": value, "logprob": alternatives[0][1], "bytes": None, "top_logprobs": tops})
        at = position + len(value)
    if at < len(content):
        piece = content[at:]
        out.append({"token": piece, "logprob": 0.0, "bytes": None,
                    "top_logprobs": [{"token": piece, "logprob": 0.0, "bytes": None}]})
    return out
