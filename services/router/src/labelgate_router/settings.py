"""Router settings (``LABELGATE_ROUTER_…``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELGATE_ROUTER_", extra="ignore")

    # Seeds the audit draw: an item is audited, or not, the same way across restarts and replays.
    audit_seed: str = "labelgate-audit"
    # A project's calibration is refitted after this many new reviewed outcomes, or after this long if any
    # arrived; below ``calibration_min_samples`` scored outcomes the calibrator stays the identity.
    calibration_every_outcomes: int = Field(default=50, ge=1)
    # ...or once the new outcomes reach this share of those the current fit rests on (0: off).
    calibration_growth: float = Field(default=0.25, ge=0)
    calibration_interval_s: float = Field(default=30.0, gt=0)
    calibration_min_samples: int = Field(default=30, ge=2)
    # How raw confidence maps to P(correct): a step function (isotonic) or a logistic curve (platt), both fitted on
    # the reviewed outcomes, or none (identity) for a model whose confidence is calibrated already, as the local
    # model's Platt-scaled one is; reliability, ECE and target-precision thresholds are measured the same way.
    calibration_method: Literal["isotonic", "platt", "identity"] = "isotonic"
    # Each step of the isotonic calibration curve is the lower confidence bound (at this level) of its outcomes'
    # accuracy, so that a step resting on few outcomes does not read as certainty; None: the plain accuracy.
    calibration_bound_level: float | None = Field(default=None, ge=0.5, lt=1.0)
    # A predicted label is unreliable (``exclude_unreliable_labels`` sends it to review) once it has this many
    # reviewed outcomes and the upper confidence bound of the AI's accuracy on it is below the bar.
    unreliable_min_support: int = Field(default=20, ge=1)
    unreliable_min_accuracy: float = Field(default=0.8, gt=0, le=1)
    # Label-issue search over final labels: how often, from how many finals on, and how many items at most are
    # sent back to review per project and run.
    label_issue_interval_s: float = Field(default=300.0, gt=0)
    label_issue_min_finals: int = Field(default=100, ge=2)
    label_issue_max_per_run: int = Field(default=20, ge=0)
    host: str = "127.0.0.1"
    port: int = 8002
