"""``ray-app fairness report``: report.json and a self-contained report.html from a signed
version's fairness block, and one clear line for each input it cannot use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ray_app.cli import app
from ray_app.evaluation.fairness import FairnessConfig
from ray_app.evaluation.offline import user_group_frame
from ray_app.registry.store import Registry
from ray_app.training.fit import FitInputs, fit_and_evaluate


@pytest.fixture()
def registry(tmp_path: Path) -> tuple[Registry, str, str]:
    """A registry with an itemknn version carrying a fairness block, then one without."""
    rng = np.random.default_rng(3)
    rows = [(f"u{u}", f"m{int(i)}") for u in range(80) for i in rng.choice(40, 10, replace=False)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    test = frame.groupby("user_id").head(2)
    train = frame.drop(test.index)
    profiles = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(80)],
            "age": [18 + u % 50 for u in range(80)],
            "gender": ["F" if u % 2 else "M" for u in range(80)],
            "occupation": ["artist" if u % 4 else "doctor" for u in range(80)],
        }
    )
    inputs = FitInputs(
        train,
        test,
        sorted(frame["item_id"].unique()),
        10,
        user_groups=user_group_frame(train, profiles),
        fairness=FairnessConfig(bootstrap_samples=100),
    )
    fitted = fit_and_evaluate("itemknn", {}, inputs)
    reg = Registry(tmp_path / "registry")
    with_block = reg.register(
        fitted.model, metrics=fitted.metrics, extra={"fairness": fitted.fairness}
    )
    without = reg.register(fitted.model, metrics=fitted.metrics)
    return reg, with_block.version, without.version


def _report(reg: Registry, *args: str) -> list[str]:
    return ["fairness", "report", "--registry", reg.uri, *args]


def _one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and "Traceback" not in output
    return lines[0]


def test_report_writes_json_and_self_contained_html(
    registry: tuple[Registry, str, str], tmp_path: Path
) -> None:
    reg, version, _ = registry
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        _report(reg, "--model", "itemknn", "--version", version, "--out", str(out)),
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["version"] == version
    manifest = reg.read_manifest("itemknn", version)
    assert report["fairness"] == manifest["fairness"]
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 1 + 2 * len(manifest["fairness"]["groups"])
    assert 'aria-label="exposure by popularity bucket"' in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    gender = manifest["fairness"]["parity"]["gender"]["ndcg@10"]["gap"]
    assert f"{gender:.4f}" in page and f"{gender:.4f}" in result.output


def test_report_defaults_to_the_newest_version_and_says_it_has_no_block(
    registry: tuple[Registry, str, str], tmp_path: Path
) -> None:
    reg, _, newest = registry
    result = CliRunner().invoke(
        app,
        _report(reg, "--model", "itemknn", "--out", str(tmp_path / "r")),
    )
    assert result.exit_code == 2
    line = _one_error_line(result.output)
    assert f"itemknn {newest} has no fairness block" in line and "ray-app train" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "ease"], "has no versions of model 'ease' (models: itemknn)"),
        (["--model", "itemknn", "--version", "v1"], "has no version 'v1'"),
    ],
)
def test_report_names_the_fix_for_a_wrong_model_or_version(
    registry: tuple[Registry, str, str], tmp_path: Path, args: list[str], expected: str
) -> None:
    reg, _, _ = registry
    result = CliRunner().invoke(app, _report(reg, "--out", str(tmp_path / "r"), *args))
    assert result.exit_code == 2
    assert expected in _one_error_line(result.output)


def test_a_tampered_version_is_not_reported(
    registry: tuple[Registry, str, str], tmp_path: Path
) -> None:
    reg, version, _ = registry
    manifest = Path(reg.path("itemknn", version, "manifest.json"))
    manifest.write_text(manifest.read_text().replace('"k": 10', '"k": 11'))
    result = CliRunner().invoke(
        app,
        _report(reg, "--model", "itemknn", "--version", version, "--out", str(tmp_path / "r")),
    )
    assert result.exit_code == 2
    assert "failed verification" in _one_error_line(result.output)
    assert not (tmp_path / "r").exists()
