"""What the router's read API returns: a project's systematic errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from labelgate_quality.issues import LabelReliability

from .systematic import SystematicErrors


class Public(BaseModel):
    model_config = ConfigDict(frozen=True)


class LabelReliabilityPublic(Public):
    label: str = Field(description="The label the AI proposed")
    slice_field: str | None = Field(default=None, description="Metadata field of the slice; null overall")
    slice_value: str | None = Field(default=None, description="Its value in the slice")
    support: int = Field(description="Reviewed items where the AI proposed the label")
    correct: int = Field(description="Of those, items the reviewer gave the same label")
    accuracy: float
    lower_bound: float = Field(description="One-sided 95% Wilson lower bound of the accuracy")
    upper_bound: float = Field(description="One-sided 95% Wilson upper bound of the accuracy")
    unreliable: bool = Field(description="Enough support and even the upper bound below the required accuracy")
    mistaken_for: dict[str, int] = Field(description="What reviewers said instead, when they disagreed")

    @classmethod
    def of(cls, row: LabelReliability) -> LabelReliabilityPublic:
        return cls(
            label=row.label,
            slice_field=row.slice_field,
            slice_value=row.slice_value,
            support=row.support,
            correct=row.correct,
            accuracy=row.accuracy,
            lower_bound=row.lower_bound,
            upper_bound=row.upper_bound,
            unreliable=row.unreliable,
            mistaken_for=row.mistaken_for,
        )


class ConfusionPublic(Public):
    classes: list[str]
    matrix: list[list[int]] = Field(description="matrix[i][j]: reviewers said classes[i], the AI classes[j]")


class SystematicErrorsPublic(Public):
    project_id: str
    reviewed: int = Field(description="Reviewed items with an AI label the figures rest on")
    leaked: int = Field(description="Reviewed items left out: duplicates of the model's own examples")
    min_support: int
    min_accuracy: float
    unreliable_labels: list[str] = Field(
        description="Labels the AI is consistently wrong on; routed to review under exclude_unreliable_labels"
    )
    labels: list[LabelReliabilityPublic] = Field(description="Per proposed label, worst lower bound first")
    slices: list[LabelReliabilityPublic] = Field(
        description="Per metadata slice (field=value) and proposed label, with at least min_support items"
    )
    confusion: ConfusionPublic

    @classmethod
    def of(
        cls, project_id: str, report: SystematicErrors, min_support: int, min_accuracy: float
    ) -> SystematicErrorsPublic:
        return cls(
            project_id=project_id,
            reviewed=report.reviewed,
            leaked=report.leaked,
            min_support=min_support,
            min_accuracy=min_accuracy,
            unreliable_labels=sorted(report.unreliable_labels),
            labels=[LabelReliabilityPublic.of(r) for r in report.labels],
            slices=[LabelReliabilityPublic.of(r) for r in report.slices],
            confusion=ConfusionPublic(classes=list(report.classes), matrix=report.matrix),
        )
