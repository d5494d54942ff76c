"""The standalone labeler: settings from the environment, and an app that starts and answers its probes."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from labelgate_core.settings import CoreSettings
from labelgate_labeler.main import create_app
from labelgate_labeler.settings import LabelerSettings


@pytest.mark.unit
def test_settings_come_from_labeler_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELGATE_LABELER_RETRAIN_EVERY_REVIEWS", "7")
    monkeypatch.setenv("LABELGATE_LABELER_PORT", "9101")

    settings = LabelerSettings()

    assert settings.retrain_every_reviews == 7
    assert settings.port == 9101
    assert (settings.host, settings.retrain_interval_s, settings.min_train_examples) == ("127.0.0.1", 30.0, 20)


@pytest.mark.integration
def test_standalone_app_starts_and_is_ready(tmp_path: Path) -> None:
    app = create_app(CoreSettings(data_dir=tmp_path, bus_journal=False))

    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert "labelgate_labeler_predictions_total" in client.get("/metrics").text

    assert (tmp_path / "labeler.db").exists()
