"""Writes the API documents in docs/ from the code: asyncapi.yaml (the topics, from the event models) and
openapi.json (the review API's REST interface, from its FastAPI app). ``--check`` only compares.

    .venv/bin/python scripts/generate_api_docs.py            # regenerate both
    .venv/bin/python scripts/generate_api_docs.py --check    # exit 1 if either is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ".venv/bin/python scripts/generate_api_docs.py"


def asyncapi_text() -> str:
    from labelgate_core.asyncapi import render

    return render()


def openapi_text() -> str:
    """The review API's OpenAPI document. The app is built on in-process adapters that are never started: the
    document depends only on the routes and schemas, not on where events and documents go."""
    from labelgate_core.bus.memory import MemoryBus
    from labelgate_core.store.sqlite import SqliteStore
    from labelgate_review_api.main import build_api, build_review_api
    from labelgate_review_api.settings import ReviewApiSettings

    settings = ReviewApiSettings.model_construct()  # the defaults, whatever LABELGATE_… says in this shell
    service = build_review_api(MemoryBus(partitions=1), SqliteStore(":memory:"), settings)
    return json.dumps(build_api(service, settings).openapi(), indent=2, ensure_ascii=False) + "\n"


DOCUMENTS: dict[str, Callable[[], str]] = {
    "docs/asyncapi.yaml": asyncapi_text,
    "docs/openapi.json": openapi_text,
}


def stale(root: Path = ROOT) -> list[str]:
    """The documents whose committed text differs from a fresh generation."""
    out: list[str] = []
    for name, generate in DOCUMENTS.items():
        path = root / name
        if not path.is_file() or path.read_text(encoding="utf-8") != generate():
            out.append(name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only say whether the documents are up to date")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale()
        for name in outdated:
            print(f"{name} is out of date; regenerate it with: {COMMAND}", file=sys.stderr)
        return 1 if outdated else 0
    for name, generate in DOCUMENTS.items():
        path = ROOT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generate(), encoding="utf-8")
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
