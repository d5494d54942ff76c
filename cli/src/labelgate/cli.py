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
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from labelgate_client import LabelgateClient
from labelgate_core.observability import configure_logging
from labelgate_core.settings import CoreSettings

from .baselines import BudgetCurve, PriceModel, budget_curve_png
from .datasets import DATASETS, DatasetFormatError, DatasetMissingError, spam_assassin_jsonl
from .replay import TASKS, DatasetError, ReplayOptions, ReplayReport, TaskName, load_dataset, replay

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
            if key in ("baselines", "budget_curve"):
                continue  # nested tables of their own, in the JSON (--json, --out)
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else _short(value))
        Console().print(table)
        Console().print(_baselines_table(data))
    typer.echo(json.dumps(data) if as_json else "")


def _short(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_short(v)}" for k, v in value.items())
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _baselines_table(data: dict[str, Any]) -> Table:
    compared = data["baselines"]
    metrics = list(compared["gate"]["quality"])
    table = Table(title=f"Against the baselines ({compared['price_model']['description']})")
    for column in ("", "reviewed", *(m.replace("_", " ") for m in metrics), "$/label", "saved"):
        table.add_column(column, justify="left" if not column else "right")
    for name in ("gate", "all_human", "ai_only", "random_review"):
        row = compared[name]
        cost, saved = row["cost_per_label_usd"], row["savings_vs_all_human"]
        table.add_row(
            name.replace("_", " "), str(row["reviewed"]),
            *("" if row["quality"][m] is None else f"{row['quality'][m]:.3f}" for m in metrics),
            "" if cost is None else f"{cost:.4f}", "" if saved is None else f"{saved:.0%}",
        )
    return table


def _write_outputs(report: ReplayReport, out: Path, name: str, command: dict[str, object]) -> None:
    """``<out>/<name>.json`` (the report, with how it was made) and ``<out>/<name>-budget.png``."""
    out.mkdir(parents=True, exist_ok=True)
    data = {"dataset": name, "command": command, "report": report.as_dict()}
    (out / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    curve = report.budget_curve
    png = budget_curve_png(
        BudgetCurve(
            curve["metric"], curve["shares"], curve["router"], curve["random_mean"], curve["random_std"],
            curve["operating_point"],
        ),
        title=f"{name}: {report.items} items",
    )
    (out / f"{name}-budget.png").write_bytes(png)
    console.print(f"wrote {out / f'{name}.json'} and {out / f'{name}-budget.png'}")


ReviewSecondsOption = Annotated[float, typer.Option(min=0.0, help="Price model: reviewer seconds per item")]
HourlyRateOption = Annotated[float, typer.Option(min=0.0, help="Price model: reviewer cost per hour (USD)")]
ModelCostOption = Annotated[float, typer.Option(min=0.0, help="Price model: model cost per item (USD)")]
SeedsOption = Annotated[int, typer.Option(min=1, max=1000, help="Random draws for the random-review baseline")]
OutOption = Annotated[
    Path | None, typer.Option(file_okay=False, help="Write <name>.json and <name>-budget.png into this folder")
]


@app.command("replay")
def replay_command(
    file: Annotated[
        Path | None, typer.Argument(exists=True, dir_okay=False, help="JSONL with text and gold label(s)")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help=f"Replay a public dataset instead of FILE: {', '.join(DATASETS)}")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="classification, multi_label or entities (default: the dataset's)")
    ] = None,
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
    cache: Annotated[Path, typer.Option(help="Where the `make data-*` targets put the datasets")] = Path(".cache"),
    out: OutOption = None,
    seeds: SeedsOption = 20,
    review_seconds: ReviewSecondsOption = 30.0,
    hourly_rate: HourlyRateOption = 30.0,
    model_cost: ModelCostOption = 0.0,
) -> None:
    """Replay a labeled dataset through the pipeline; the gold labels play the human reviewers. Reports the
    gate's quality and cost against all-human, AI-only and random review at the same budget."""
    if (file is None) == (dataset is None):
        raise typer.BadParameter("give either FILE or --dataset (one of them)")
    labels: tuple[str, ...] = ()
    if dataset is not None:
        known = DATASETS.get(dataset)
        if known is None:
            raise typer.BadParameter(f"--dataset must be one of {', '.join(DATASETS)}, not {dataset!r}")
        if task is not None and task != known.task:
            raise typer.BadParameter(f"--dataset {dataset} is a {known.task} dataset; leave --task out")
        file, task, labels = _dataset_file(known.name, cache), known.task, known.labels
    if file is None:  # unreachable: one of FILE and --dataset was given, and --dataset set it
        raise typer.BadParameter("give either FILE or --dataset")
    _quiet_logs()
    options = ReplayOptions(
        task=_task(task or "classification"), project_id=project, threshold=threshold, audit_rate=audit_rate,
        target_precision=target_precision, batch=batch, reviewers=reviewers, labels=labels,
        price=PriceModel(review_seconds, hourly_rate, model_cost), seeds=seeds,
    )
    try:
        report = asyncio.run(_replay(file, options, url, data_dir, limit, show_progress=True))
    except DatasetError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if out is not None:
        command = {"dataset": dataset, "file": None if dataset else str(file), "limit": limit, **_options(options)}
        _write_outputs(report, out, dataset or file.stem, command)
    _print_report(report, as_json)


def _task(name: str) -> TaskName:
    for task in TASKS:
        if task == name:
            return task
    raise typer.BadParameter(f"--task must be one of {', '.join(TASKS)}")


def _options(options: ReplayOptions) -> dict[str, object]:
    return {
        "task": options.task, "threshold": options.threshold, "audit_rate": options.audit_rate,
        "target_precision": options.target_precision, "seeds": options.seeds, "batch": options.batch,
        "price_model": options.price.describe(),
    }


def _dataset_file(name: str, cache: Path) -> Path:
    """The dataset's replay JSONL, converted from what `make data-*` fetched; exit 2 with the fix when missing."""
    try:
        return DATASETS[name].convert(cache)
    except DatasetMissingError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    except DatasetFormatError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="End with the report as one JSON line")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Replay only the first N emails")] = None,
    cache: Annotated[Path, typer.Option(help="Where `make data` put the datasets")] = Path(".cache"),
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Auto-accept threshold")] = 0.9,
    target_precision: TargetPrecisionOption = None,
    out: OutOption = None,
    seeds: SeedsOption = 20,
    review_seconds: ReviewSecondsOption = 30.0,
    hourly_rate: HourlyRateOption = 30.0,
    model_cost: ModelCostOption = 0.0,
) -> None:
    """Replay the SpamAssassin public corpus (6,046 emails, spam/ham) through an embedded pipeline."""
    _quiet_logs()
    try:
        path = spam_assassin_jsonl(cache)
    except DatasetMissingError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    options = ReplayOptions(
        threshold=threshold, target_precision=target_precision, labels=DATASETS["spam-assassin"].labels,
        price=PriceModel(review_seconds, hourly_rate, model_cost), seeds=seeds,
    )
    report = asyncio.run(_replay(path, options, None, None, limit, show_progress=True))
    if out is not None:
        _write_outputs(report, out, "spam-assassin", {"command": "demo", "limit": limit, **_options(options)})
    _print_report(report, as_json)


@app.command("report")
def report_command(
    project: Annotated[str, typer.Argument(help="The project's id")],
    url: Annotated[
        str, typer.Option(help="The review API (or the embedded pipeline of `labelgate run`)")
    ] = "http://127.0.0.1:8000",
    metrics_url: Annotated[
        str | None, typer.Option(help="The metrics service's API; default: --url (the embedded pipeline)")
    ] = None,
    out: Annotated[Path, typer.Option(dir_okay=False, help="Where to write the HTML page")] = Path("report.html"),
    hourly_rate: Annotated[float, typer.Option(min=0.0, help="Reviewer cost per hour, in US dollars")] = 30.0,
    human_seconds_per_label: Annotated[
        float | None,
        typer.Option(min=0.0, help="Seconds to label an item by hand (the baseline); default: seconds per review"),
    ] = None,
) -> None:
    """Write a self-contained HTML report of PROJECT: accuracy vs share reviewed, reliability, learning curve,
    confusion, agreement and cost."""
    from .report import ReportError, build_report

    def line(done: int, total: int) -> None:
        console.print(f"report {project}: read {done}/{total} items")

    with Progress(
        TextColumn("[bold]report[/] {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(f"{project}: items", total=None)

        def progress(done: int, total: int) -> None:
            if console.is_terminal:
                bar.update(task, completed=done, total=total)
            else:
                line(done, total)

        try:
            page = asyncio.run(
                build_report(
                    url, project, metrics_url=metrics_url, hourly_rate_usd=hourly_rate,
                    human_seconds_per_label=human_seconds_per_label, progress=progress,
                )
            )
        except ReportError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from exc
    out.write_text(page, encoding="utf-8")
    console.print(f"report written to {out} ({len(page) / 1024:.0f} KiB)")


def _quiet_logs() -> None:
    """Replay and demo talk to people: keep the services' logs to warnings unless asked otherwise."""
    configure_logging(os.environ.get("LABELGATE_LOG_LEVEL", "WARNING"), os.environ.get("LABELGATE_LOG_FORMAT", "text"))
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


if __name__ == "__main__":
    app()
