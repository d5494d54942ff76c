"""``labelgate report``: one project's quality, calibration, learning and cost as a self-contained HTML page,
gathered over the REST APIs (the review API's items, the metrics service's aggregates and model versions).

Every figure is computed from what people reviewed: a reviewed item's final label is the truth its AI proposal
is measured against. Reviewed items are not a random sample (low confidence sends items to review; only the
audit share is random), and the page says so where it matters."""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from labelgate_client import LabelgateClient
from labelgate_client.models import Item, Project
from labelgate_quality.agreement import cohen_kappa, krippendorff_alpha
from labelgate_quality.calibration import expected_calibration_error, reliability_curve
from labelgate_quality.economics import CostReport, cost_report
from labelgate_quality.plots import (
    accuracy_vs_review_share,
    confusion_matrix_plot,
    learning_curve,
    reliability_diagram,
)

Progress = Callable[[int, int], None]
"""Called with (items read, items in the project) as pages arrive."""

THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)
MISSING = "n/a"
NONE_LABEL = "(none)"
OTHER_LABEL = "(other)"
MAX_CLASSES = 20
"""The confusion matrix shows the most frequent label (sets) and folds the rest into ``(other)``."""


class ReportError(Exception):
    """The report cannot be made: the project is missing, or a service cannot be reached or answers wrongly."""


# -- what is gathered ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReviewRow:
    reviewer_id: str
    labels: tuple[str, ...]
    duration_s: float | None


@dataclass(frozen=True, slots=True)
class ItemRow:
    """What the report needs of one item (kept small: a report reads every item of the project)."""

    item_id: str
    ai_labels: tuple[str, ...] | None
    """None when no decision was made yet."""
    confidence: float | None
    calibrated: float | None
    reasons: tuple[str, ...]
    final_labels: tuple[str, ...] | None
    final_source: str | None
    reviews: tuple[ReviewRow, ...]

    @classmethod
    def of(cls, item: Item) -> ItemRow:
        decision = item.decision
        return cls(
            item_id=item.item_id,
            ai_labels=tuple(sorted(set(decision.proposal.labels))) if decision else None,
            confidence=decision.proposal.confidence if decision else None,
            calibrated=decision.calibrated_confidence if decision else None,
            reasons=tuple(decision.reasons) if decision else (),
            final_labels=tuple(sorted(set(item.final.labels))) if item.final else None,
            final_source=item.final.source if item.final else None,
            reviews=tuple(ReviewRow(r.reviewer_id, tuple(sorted(set(r.labels))), r.duration_s) for r in item.reviews),
        )

    @property
    def proposed(self) -> bool:
        """Whether the AI made a proposal: a scored one, or at least a label (a cold start has neither)."""
        return self.ai_labels is not None and (self.confidence is not None or bool(self.ai_labels))

    @property
    def reviewed(self) -> bool:
        return self.final_source == "review"

    @property
    def ai_correct(self) -> bool:
        return self.ai_labels is not None and self.ai_labels == self.final_labels


@dataclass
class ReportData:
    project: Project
    items: list[ItemRow]
    metrics: dict[str, Any] | None
    """The metrics service's aggregates; None when no event of the project reached it."""
    models: list[dict[str, Any]]
    human_agreement: dict[str, Any] | None = None
    """The review API's human-vs-human agreement on overlapped items; None from a server without it."""
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


async def _get_json(http: httpx.AsyncClient, path: str, service: str) -> Any:
    """The JSON body at ``path``; None for a 404 (no data yet, or a server without that endpoint)."""
    try:
        response = await http.get(path)
    except httpx.TransportError as exc:
        raise ReportError(f"cannot reach the {service} at {http.base_url}: {exc}") from exc
    if response.status_code == 404:
        return None
    if response.is_error:
        raise ReportError(f"the {service} answered {response.status_code} to {path}: {response.text[:200]}")
    return response.json()


async def gather(
    url: str,
    project_id: str,
    *,
    metrics_url: str | None = None,
    progress: Progress | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    page_size: int = 1000,
) -> ReportData:
    """Read the project, every item (page by page) and the metrics over REST. ``metrics_url`` defaults to
    ``url``: the embedded pipeline serves both APIs on one port."""
    from labelgate_client import LabelgateAPIError

    async with LabelgateClient(url, timeout=120.0, transport=transport) as client:
        try:
            project = await client.get_project(project_id)
            total = (await client.stats(project_id)).items
            rows: list[ItemRow] = []
            after: str | None = None
            while True:
                page = await client.list_items(project_id, limit=page_size, after=after)
                rows.extend(ItemRow.of(item) for item in page.items)
                if progress:
                    progress(len(rows), max(total, len(rows)))
                if not page.next_after:
                    break
                after = page.next_after
        except LabelgateAPIError as exc:
            raise ReportError(exc.message if exc.status == 404 else str(exc)) from exc
        except httpx.TransportError as exc:
            raise ReportError(f"cannot reach the review API at {url}: {exc}") from exc
    segment = quote(project_id, safe="")
    async with httpx.AsyncClient(base_url=url, timeout=120.0, transport=transport) as http:
        human = await _get_json(http, f"/v1/projects/{segment}/agreement", "review API")
    async with httpx.AsyncClient(base_url=metrics_url or url, timeout=120.0, transport=transport) as http:
        metrics = await _get_json(http, f"/v1/projects/{segment}/metrics", "metrics service")
        models = await _get_json(http, f"/v1/projects/{segment}/models", "metrics service") if metrics else None
    return ReportData(project=project, items=rows, metrics=metrics, models=list(models or []), human_agreement=human)


# -- what is computed ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThresholdRow:
    threshold: float
    reviewed_share: float
    accuracy: float


@dataclass(frozen=True, slots=True)
class AgreementRow:
    pair: str
    statistic: str
    value: float | None
    observed: float | None
    """Share of ratings (or rater pairs) that agree."""
    n: int
    note: str = ""


@dataclass
class Analysis:
    n_items: int
    n_final: int
    n_auto: int
    n_reviewed: int
    scored: int
    """Reviewed items whose proposal had a confidence: the sample behind calibration and the threshold curve."""
    audited: int
    confidence: list[float]
    calibrated: list[float]
    correct: list[bool]
    thresholds: list[ThresholdRow]
    ece_raw: float | None
    ece_calibrated: float | None
    classes: list[str]
    confusion: list[list[int]]
    agreement: list[AgreementRow]
    label_agreement: list[dict[str, Any]]
    """Human-vs-human agreement per label on overlapped items (the review API's), lowest first."""
    models: list[dict[str, Any]]
    cost: CostReport
    reviewer_seconds: float
    reviews_timed: int
    reviews_total: int
    hourly_rate_usd: float
    llm_cost_known: bool


def _label_key(labels: Sequence[str] | None) -> str:
    return "+".join(labels) if labels else NONE_LABEL


def _confusion(pairs: Sequence[tuple[str, str]]) -> tuple[list[str], list[list[int]]]:
    """Rows the human's label (set), columns the AI's; rare ones folded into ``(other)``."""
    counts = Counter(key for pair in pairs for key in pair)
    kept = [key for key, _ in counts.most_common(MAX_CLASSES)]
    fold = len(counts) > MAX_CLASSES
    classes = sorted(kept) + ([OTHER_LABEL] if fold else [])
    index = {name: i for i, name in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for ai, human in pairs:
        row = index.get(human, index.get(OTHER_LABEL, 0))
        column = index.get(ai, index.get(OTHER_LABEL, 0))
        matrix[row][column] += 1
    return classes, matrix


def _overlap_agreement(report: Mapping[str, Any]) -> list[AgreementRow]:
    """Rows from the review API's agreement on overlapped items (several reviewers answered one item)."""
    n = int(report.get("overlapped_items") or 0)
    about = f"{n} overlapped items, {int(report.get('answers') or 0)} answers"
    return [
        AgreementRow(
            "human vs human",
            "Cohen's kappa",
            report.get("cohen_kappa"),
            None,
            n,
            "items answered by exactly two reviewers",
        ),
        AgreementRow("human vs human", "Fleiss' kappa", report.get("fleiss_kappa"), None, n, about),
        AgreementRow("human vs human", "Krippendorff's alpha", report.get("krippendorff_alpha"), None, n, about),
    ]


def _human_agreement(items: Sequence[ItemRow]) -> AgreementRow:
    overlapping = [item for item in items if len({r.reviewer_id for r in item.reviews}) >= 2]
    if not overlapping:
        return AgreementRow(
            "human vs human", "Krippendorff's alpha", None, None, 0, "no item was reviewed by two or more people"
        )
    reviewers = sorted({r.reviewer_id for item in overlapping for r in item.reviews})
    position = {reviewer: i for i, reviewer in enumerate(reviewers)}
    matrix: list[list[str | None]] = [[None] * len(overlapping) for _ in reviewers]
    agree = pairs = 0
    for unit, item in enumerate(overlapping):
        latest = {r.reviewer_id: _label_key(r.labels) for r in item.reviews}
        for reviewer, key in latest.items():
            matrix[position[reviewer]][unit] = key
        keys = list(latest.values())
        for i in range(len(keys)):
            for j in range(i + 1, len(keys)):
                pairs += 1
                agree += keys[i] == keys[j]
    alpha = krippendorff_alpha(matrix)
    return AgreementRow(
        "human vs human",
        "Krippendorff's alpha",
        alpha,
        agree / pairs if pairs else None,
        len(overlapping),
        f"{len(reviewers)} reviewers, items reviewed by two or more",
    )


def analyse(data: ReportData, *, hourly_rate_usd: float, human_seconds_per_label: float | None = None) -> Analysis:
    items = data.items
    finals = [item for item in items if item.final_labels is not None]
    reviewed = [item for item in finals if item.reviewed]
    proposed = [item for item in reviewed if item.proposed]
    scored = [item for item in proposed if item.confidence is not None]
    confidence = [float(item.confidence) for item in scored if item.confidence is not None]
    calibrated = [item.calibrated if item.calibrated is not None else float(item.confidence or 0.0) for item in scored]
    correct = [item.ai_correct for item in scored]

    thresholds = []
    if scored:
        conf = np.asarray(calibrated)
        right = np.asarray(correct)
        for threshold in THRESHOLDS:
            review = conf < threshold
            thresholds.append(ThresholdRow(threshold, float(review.mean()), float((review | right).mean())))

    pairs = [(_label_key(item.ai_labels), _label_key(item.final_labels)) for item in proposed]
    classes, matrix = _confusion(pairs)

    metrics = data.metrics or {}
    agreement = [
        AgreementRow(
            "human vs AI",
            "Cohen's kappa",
            cohen_kappa([ai for ai, _ in pairs], [human for _, human in pairs]),
            sum(ai == human for ai, human in pairs) / len(pairs) if pairs else None,
            len(pairs),
            "reviewed items with an AI proposal (label sets compared whole)",
        ),
    ]
    service_agreement = metrics.get("agreement") or {}
    if service_agreement:
        agreement.append(
            AgreementRow(
                "human vs AI (metrics service)",
                "Cohen's kappa",
                service_agreement.get("cohen_kappa"),
                service_agreement.get("audit_accuracy"),
                int(service_agreement.get("kappa_ratings") or 0),
                "multi-label tasks rated per label; agreement column: accuracy on audited items",
            )
        )
    overlap = data.human_agreement or {}
    label_rows: list[dict[str, Any]] = []
    if int(overlap.get("overlapped_items") or 0) > 0:
        agreement.extend(_overlap_agreement(overlap))
        label_rows = list(overlap.get("labels") or [])
    else:
        agreement.append(_human_agreement(items))

    reviews = [review for item in items for review in item.reviews]
    timed = [review.duration_s for review in reviews if review.duration_s is not None]
    llm_cost = metrics.get("cost_usd_total")
    cost = cost_report(
        n_final=len(finals),
        llm_cost_usd=float(llm_cost or 0.0),
        reviewer_seconds=float(sum(timed)),
        n_reviewed=min(len(reviewed), len(finals)),
        hourly_rate_usd=hourly_rate_usd,
        human_seconds_per_label=human_seconds_per_label,
    )
    return Analysis(
        n_items=len(items),
        n_final=len(finals),
        n_auto=sum(item.final_source == "auto" for item in finals),
        n_reviewed=len(reviewed),
        scored=len(scored),
        audited=sum("audit" in item.reasons for item in reviewed),
        confidence=confidence,
        calibrated=calibrated,
        correct=correct,
        thresholds=thresholds,
        ece_raw=expected_calibration_error(confidence, correct),
        ece_calibrated=expected_calibration_error(calibrated, correct),
        classes=classes,
        confusion=matrix,
        agreement=agreement,
        label_agreement=label_rows,
        models=sorted(data.models, key=lambda m: (int(m.get("model_version", 0)), str(m.get("model_id")))),
        cost=cost,
        reviewer_seconds=float(sum(timed)),
        reviews_timed=len(timed),
        reviews_total=len(reviews),
        hourly_rate_usd=hourly_rate_usd,
        llm_cost_known=llm_cost is not None,
    )


# -- the page ------------------------------------------------------------------------------------------------


def _cost_chart(cost: CostReport) -> bytes:
    figure = Figure(figsize=(5.0, 3.2), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.bar(["with the gate"], [cost.llm_cost_usd], color="C0", label="LLM")
    ax.bar(["with the gate"], [cost.review_cost_usd], bottom=[cost.llm_cost_usd], color="C1", label="reviewers")
    ax.bar(["all human"], [cost.baseline_cost_usd], color="C2", label="all-human baseline")
    top = max(cost.total_cost_usd, cost.baseline_cost_usd)
    ax.set(ylabel="US dollars", title="Cost of the final labels", ylim=(0, top * 1.35 if top > 0 else 1.0))
    ax.legend(loc="upper center", ncols=3, fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}%"


def _usd(value: float | None) -> str:
    return MISSING if value is None else f"${value:,.4f}" if abs(value) < 1 else f"${value:,.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{"".join(parts)}</section>'


SECTIONS: tuple[tuple[str, str], ...] = (
    ("accuracy-vs-review", "Accuracy vs share reviewed"),
    ("reliability", "Reliability diagram"),
    ("learning-curve", "Learning curve of the local model"),
    ("confusion", "Confusion matrix: AI vs human"),
    ("agreement", "Agreement"),
    ("cost", "Cost"),
)
TITLES = dict(SECTIONS)


def _accuracy_section(a: Analysis) -> str:
    if not a.scored:
        return _section(
            "accuracy-vs-review",
            TITLES["accuracy-vs-review"],
            _note("No reviewed item had a scored AI proposal yet: nothing to measure."),
        )
    rows = [[_num(t.threshold, 2), _pct(t.reviewed_share), _pct(t.accuracy)] for t in a.thresholds]
    return _section(
        "accuracy-vs-review",
        TITLES["accuracy-vs-review"],
        _note(
            f"On the {a.scored} reviewed items with a scored proposal ({a.audited} of them random audits): an "
            "item below the threshold (calibrated confidence) would be reviewed and end up right; one above "
            "keeps the AI's label. Reviewed items lean to low confidence, so the curve is pessimistic about "
            "the items the gate auto-accepts."
        ),
        _img(accuracy_vs_review_share(a.calibrated, a.correct), "accuracy vs share reviewed"),
        _table(["threshold", "share reviewed", "accuracy of final labels"], rows),
    )


def _reliability_section(a: Analysis) -> str:
    if not a.scored:
        return _section("reliability", TITLES["reliability"], _note("No scored proposal was reviewed yet."))
    return _section(
        "reliability",
        TITLES["reliability"],
        _note(
            f"Confidence against accuracy on {a.scored} reviewed items. Expected calibration error: raw "
            f"{_num(a.ece_raw)}, calibrated {_num(a.ece_calibrated)}."
        ),
        '<div class="row">',
        _img(
            reliability_diagram(reliability_curve(a.confidence, a.correct), title="Raw confidence"),
            "reliability diagram, raw confidence",
        ),
        _img(
            reliability_diagram(reliability_curve(a.calibrated, a.correct), title="Calibrated confidence"),
            "reliability diagram, calibrated confidence",
        ),
        "</div>",
    )


def _learning_section(a: Analysis) -> str:
    rows = [
        [
            str(m.get("model_id", "")),
            str(m.get("model_version", "")),
            str(m.get("trained_on", "")),
            _num(m.get("holdout_accuracy")),
            str(m.get("trained_at", "")),
        ]
        for m in a.models
    ]
    points = [
        (float(m["trained_on"]), float(m["holdout_accuracy"]))
        for m in a.models
        if m.get("holdout_accuracy") is not None
    ]
    parts = []
    if points:
        parts.append(
            _img(
                learning_curve([p[0] for p in points], [p[1] for p in points], ylabel="holdout accuracy"),
                "learning curve",
            )
        )
    else:
        parts.append(
            _note(
                "No model version with a holdout accuracy yet (the local model trains once enough "
                "items are reviewed, and holds every n-th one out)."
            )
        )
    if rows:
        parts.append(_table(["model", "version", "trained on", "holdout accuracy", "trained at"], rows))
    return _section("learning-curve", TITLES["learning-curve"], *parts)


def _confusion_section(a: Analysis) -> str:
    if not a.classes:
        return _section("confusion", TITLES["confusion"], _note("No reviewed item with an AI proposal yet."))
    return _section(
        "confusion",
        TITLES["confusion"],
        _note("Reviewed items: rows are the human's final label, columns the AI's proposal."),
        _img(confusion_matrix_plot(np.asarray(a.confusion), a.classes), "confusion matrix"),
    )


def _agreement_section(a: Analysis) -> str:
    rows = [[r.pair, r.statistic, _num(r.value), _pct(r.observed), str(r.n), r.note] for r in a.agreement]
    parts = [_table(["raters", "statistic", "value", "observed agreement", "n", "about"], rows)]
    if a.label_agreement:
        per_label = [
            [
                str(row.get("label", "")),
                str(row.get("support", "")),
                _pct(row.get("specific_agreement")),
                "yes" if row.get("ambiguous") else "",
            ]
            for row in a.label_agreement
        ]
        parts.append(
            _note(
                "Human vs human, per label: of the reviewer pairs on an item where one used the label, "
                "the share where the other did too. Ambiguous labels are read differently by reviewers."
            )
        )
        parts.append(_table(["label", "support", "specific agreement", "ambiguous"], per_label))
    return _section("agreement", TITLES["agreement"], *parts)


def _cost_section(a: Analysis) -> str:
    c = a.cost
    rows = [
        ["LLM", _usd(c.llm_cost_usd) if a.llm_cost_known else "n/a (no metrics for the project)"],
        [
            "reviewer time",
            f"{a.reviewer_seconds / 3600:.2f} h in {a.reviews_timed} timed reviews (of {a.reviews_total})",
        ],
        ["reviewers", _usd(c.review_cost_usd)],
        ["total with the gate", _usd(c.total_cost_usd)],
        ["per final label", _usd(c.cost_per_label_usd)],
        ["all-human baseline", f"{_usd(c.baseline_cost_usd)} ({_num(c.baseline_seconds_per_label, 1)} s per label)"],
        ["saved", f"{_usd(c.savings_usd)} ({_pct(c.savings_share)})"],
    ]
    return _section(
        "cost",
        TITLES["cost"],
        _note(
            f"{c.n_final} final labels; reviewer time at ${a.hourly_rate_usd:,.2f} per hour. The baseline labels "
            "every final item by hand, at the observed seconds per review unless told otherwise."
        ),
        _img(_cost_chart(c), "cost breakdown"),
        _table(["", ""], rows),
    )


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}section{margin:2em 0;border-top:1px solid #ddd;padding-top:.5em}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f4f4f4}.note{color:#555;max-width:60em}.row{display:flex;flex-wrap:wrap;gap:1em}
img{max-width:100%}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:600}"""


def render_html(data: ReportData, a: Analysis) -> str:
    p = data.project
    facts = [
        ("project", f"{p.name} ({p.id})"),
        ("task", f"{p.task.type}: {', '.join(p.task.label_names)}"),
        ("data owner", p.data_owner or MISSING),
        ("licence", p.license or MISSING),
        ("items", f"{a.n_items} ({a.n_final} final: {a.n_auto} auto-accepted, {a.n_reviewed} reviewed)"),
        ("guideline version", str(p.guideline_version)),
        ("generated", data.generated_at.isoformat(timespec="seconds")),
    ]
    header = "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts) + "</dl>"
    contents = "<ol>" + "".join(f'<li><a href="#{k}">{html.escape(t)}</a></li>' for k, t in SECTIONS) + "</ol>"
    body = "".join(
        [
            _accuracy_section(a),
            _reliability_section(a),
            _learning_section(a),
            _confusion_section(a),
            _agreement_section(a),
            _cost_section(a),
        ]
    )
    title = html.escape(f"Labelgate report: {p.name}")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body><h1>{title}</h1>{header}{contents}{body}</body></html>\n"
    )


async def build_report(
    url: str,
    project_id: str,
    *,
    metrics_url: str | None = None,
    hourly_rate_usd: float = 30.0,
    human_seconds_per_label: float | None = None,
    progress: Progress | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """The report's HTML for ``project_id`` of the pipeline at ``url``."""
    data = await gather(url, project_id, metrics_url=metrics_url, progress=progress, transport=transport)
    analysis = analyse(data, hourly_rate_usd=hourly_rate_usd, human_seconds_per_label=human_seconds_per_label)
    return render_html(data, analysis)
