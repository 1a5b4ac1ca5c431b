"""`execution:` in campaign files: a kind that cannot play on Ray rollout workers refuses `backend: ray` before
anything runs (one message, exit 2, nothing written). No Ray instance is started here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agora.cli import app
from agora.registry import CAMPAIGNS
from tests.conftest import SCENARIOS

LOCAL_ONLY = [entry.name for entry in CAMPAIGNS.entries() if not entry.load().ray_workers]


def refused(output: str) -> bool:
    return (
        "execution.backend: this campaign kind plays in this process only" in output
        and "set execution.backend: local" in output
        and "Traceback" not in output
    )


@pytest.mark.parametrize("kind", LOCAL_ONLY)
def test_a_kind_without_ray_workers_refuses_backend_ray_and_writes_nothing(kind, tracking_uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a campaign that started would make its checkpoint folder here
    campaign = tmp_path / f"{kind}.yaml"
    example = CAMPAIGNS.get(kind).load().example()
    campaign.write_text(yaml.safe_dump({"kind": kind, **example, "execution": {"backend": "ray", "workers": 2}}))
    runner = CliRunner()
    checked = runner.invoke(app, ["validate", str(campaign)])
    assert checked.exit_code == 2 and refused(checked.output), checked.output
    trained = runner.invoke(app, ["train", str(campaign), "--tracking-uri", tracking_uri])
    assert trained.exit_code == 2 and refused(trained.output), trained.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [campaign.name]  # no MLflow store, no checkpoints


def test_the_override_on_a_shipped_campaign_is_blamed_as_the_cause(tracking_uri, tmp_path, monkeypatch):
    files = [
        str(path)
        for path in sorted((SCENARIOS / "campaigns").glob("*.yaml"))
        if yaml.safe_load(path.read_text()).get("kind", "train") in LOCAL_ONLY
    ]
    if not files:
        pytest.skip("every kind of the shipped campaign files plays on Ray workers")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", files[0], "execution.backend=ray", "--tracking-uri", tracking_uri])
    assert result.exit_code == 2 and refused(result.output), result.output
    assert "from the override `execution.backend=ray`" in result.output
    assert list(Path(tmp_path).iterdir()) == []
