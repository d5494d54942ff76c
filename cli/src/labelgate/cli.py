"""``labelgate``: run the embedded pipeline, run one service, replay a labeled dataset, or run the demo."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from labelgate_client import LabelgateClient
from labelgate_core.observability import configure_logging
from labelgate_core.settings import CoreSettings

from .datasets import DatasetMissingError, spam_assassin_jsonl
from .replay import TASKS, DatasetError, ReplayOptions, ReplayReport, load_dataset, replay

app = typer.Typer(help="Labelgate: AI-assisted data labeling with a human gate.", no_args_is_help=True)
console = Console(stderr=True)

SERVICES = ("review-api", "labeler", "router", "metrics")

TargetPrecisionOption = Annotated[
    float | None,
    typer.Option(
        min=0.01, max=1.0,
        help="Precision auto-accepted labels must reach (lower confidence bound); replaces --threshold",
    ),
]


@app.command()
def run(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the REST API")] = 8000,
    data_dir: Annotated[Path | None, typer.Option(help="Where the store and bus keep their files")] = None,
) -> None:
    """Run the four services in one process: in-process bus, SQLite, local model. REST API and /docs on PORT."""
    from .embedded import build_pipeline  # only here: `serve` must not load all four services

    core = CoreSettings() if data_dir is None else CoreSettings(data_dir=data_dir)
    configure_logging(core.log_level, core.log_format)
    pipeline = build_pipeline(core)
    uvicorn.run(pipeline.app, host=host, port=port, log_config=None, timeout_graceful_shutdown=25)


@app.command()
def serve(service: Annotated[str, typer.Argument(help="review-api, labeler, router or metrics")]) -> None:
    """Run one service on its own (multi-process mode), configured from LABELGATE_* environment variables."""
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    if service == "review-api":
        from labelgate_review_api.main import cli as review_cli

        review_cli()
    elif service == "labeler":
        from labelgate_labeler.main import cli as labeler_cli

        labeler_cli()
    elif service == "router":
        from labelgate_router.main import cli as router_cli

        router_cli()
    else:
        from labelgate_metrics.main import cli as metrics_cli

        metrics_cli()


@contextlib.asynccontextmanager
async def _pipeline_url(url: str | None, data_dir: Path | None) -> AsyncIterator[str]:
    """The given pipeline, or an embedded one started for this run (in a fresh folder unless told otherwise)."""
    if url:
        yield url
        return
    from .embedded import build_pipeline, embedded_settings, serve_in_background

    with tempfile.TemporaryDirectory(prefix="labelgate-replay-") as tmp:
        pipeline = build_pipeline(embedded_settings(data_dir or Path(tmp)))
        async with serve_in_background(pipeline.app) as base_url:
            yield base_url


async def _replay(path: Path, options: ReplayOptions, url: str | None, data_dir: Path | None,
                  limit: int | None, show_progress: bool) -> ReplayReport:
    items = load_dataset(path, options.task, limit)
    async with _pipeline_url(url, data_dir) as base_url, LabelgateClient(base_url, timeout=120.0) as client:
        if show_progress and not console.is_terminal:
            # Logs and CI have no live bar: one line per posted batch instead.
            started = time.monotonic()

            def line(done: int, total: int) -> None:
                console.print(f"replay {path.name}: {done}/{total} final labels, {time.monotonic() - started:.0f}s")

            return await replay(client, items, options, line)
        with Progress(
            TextColumn("[bold]replay[/] {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, disable=not show_progress,
        ) as bar:
            task = bar.add_task(f"{path.name} → final labels", total=len(items))
            return await replay(client, items, options, lambda done, total: bar.update(task, completed=done))


def _print_report(report: ReplayReport, as_json: bool) -> None:
    data = report.as_dict()
    if not as_json:
        table = Table(title="Replay report", show_header=False)
        for key, value in data.items():
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        Console().print(table)
    typer.echo(json.dumps(data) if as_json else "")


@app.command("replay")
def replay_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL with text and gold label(s)")],
    task: Annotated[str, typer.Option(help="classification or multi_label")] = "classification",
    as_json: Annotated[bool, typer.Option("--json", help="End with the report as one JSON line")] = False,
    url: Annotated[str | None, typer.Option(help="A running pipeline's REST API; default: start one")] = None,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Auto-accept threshold")] = 0.9,
    audit_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of auto-accepts audited")] = 0.05,
    target_precision: TargetPrecisionOption = None,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Items posted per request")] = 200,
    reviewers: Annotated[int, typer.Option(min=1, max=256, help="Simulated reviewers working at once")] = 8,
    limit: Annotated[int | None, typer.Option(min=1, help="Replay only the first N items")] = None,
    project: Annotated[str | None, typer.Option(help="Project id to create")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder of the embedded pipeline")] = None,
) -> None:
    """Replay a labeled dataset through the pipeline; the gold labels play the human reviewers."""
    if task not in TASKS:
        raise typer.BadParameter(f"--task must be one of {', '.join(TASKS)}")
    _quiet_logs()
    options = ReplayOptions(
        task="multi_label" if task == "multi_label" else "classification",
        project_id=project, threshold=threshold, audit_rate=audit_rate, target_precision=target_precision,
        batch=batch, reviewers=reviewers,
    )
    try:
        report = asyncio.run(_replay(file, options, url, data_dir, limit, show_progress=True))
    except DatasetError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _print_report(report, as_json)


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="End with the report as one JSON line")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Replay only the first N emails")] = None,
    cache: Annotated[Path, typer.Option(help="Where `make data` put the datasets")] = Path(".cache"),
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Auto-accept threshold")] = 0.9,
    target_precision: TargetPrecisionOption = None,
) -> None:
    """Replay the SpamAssassin public corpus (6,046 emails, spam/ham) through an embedded pipeline."""
    _quiet_logs()
    try:
        path = spam_assassin_jsonl(cache)
    except DatasetMissingError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    options = ReplayOptions(threshold=threshold, target_precision=target_precision)
    report = asyncio.run(_replay(path, options, None, None, limit, show_progress=True))
    _print_report(report, as_json)


def _quiet_logs() -> None:
    """Replay and demo talk to people: keep the services' logs to warnings unless asked otherwise."""
    configure_logging(os.environ.get("LABELGATE_LOG_LEVEL", "WARNING"), os.environ.get("LABELGATE_LOG_FORMAT", "text"))
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


if __name__ == "__main__":
    app()
