"""deploy/kuberay/ stays consistent with the code: the RayService serves serve_config.yaml, each
RayJob runs a jobs/ script whose arguments parse, and every version matches pyproject."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import ray
import typer.main
import yaml

from ray_app.cli import app
from ray_app.runtime import job_argv

ROOT = Path(__file__).resolve().parents[1]
KUBERAY = ROOT / "deploy" / "kuberay"
IN_IMAGE = "/app/"  # where deploy/kuberay/Dockerfile puts the repository
JOBS = {"ingest": "ingest", "train": "train", "retrain": "retrain"}


def _manifest(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d]


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pin(name: str) -> str:
    """The version pattern pyproject pins ``name`` to (``==2.60.*`` → ``2.60.*``)."""
    for dep in _pyproject()["project"]["dependencies"]:
        m = re.fullmatch(rf"{re.escape(name)}(\[[^\]]*\])?==(\S+)", dep.split(";")[0].strip())
        if m:
            return m.group(2)
    raise AssertionError(f"pyproject does not pin {name}")


def _matches(version: str, pin: str) -> bool:
    return re.fullmatch(re.escape(pin).replace(r"\*", r"\d+"), version) is not None


def _clusters() -> list[tuple[str, dict[str, Any]]]:
    out = [("rayservice.yaml", _manifest("rayservice.yaml")[0]["spec"]["rayClusterConfig"])]
    for job in JOBS:
        name = f"rayjob-{job}.yaml"
        out.append((name, _manifest(name)[0]["spec"]["rayClusterSpec"]))
    return out


def _sync_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "sync_serve_config", KUBERAY / "sync_serve_config.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rayservice_serves_exactly_serve_config_yaml() -> None:
    service = _manifest("rayservice.yaml")[0]
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    serve_config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    served = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert served["applications"] == serve_config["applications"]
    assert served == serve_config  # proxies and HTTP options too
    # Byte for byte what the sync script writes, so comments cannot drift either.
    sync = _sync_module()
    text = (KUBERAY / "rayservice.yaml").read_text()
    assert sync.rendered(text, (ROOT / "serve_config.yaml").read_text()) == text, (
        "stale: run python deploy/kuberay/sync_serve_config.py"
    )


def test_serve_import_paths_import() -> None:
    served = yaml.safe_load(_manifest("rayservice.yaml")[0]["spec"]["serveConfigV2"])
    for application in served["applications"]:
        module, _, attr = application["import_path"].partition(":")
        assert callable(getattr(importlib.import_module(module), attr))


@pytest.mark.parametrize("job", sorted(JOBS))
def test_rayjob_runs_its_jobs_script_with_arguments_that_parse(job: str) -> None:
    (manifest,) = _manifest(f"rayjob-{job}.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    python, script, *args = shlex.split(manifest["spec"]["entrypoint"])
    assert python == "python"
    assert script == f"{IN_IMAGE}jobs/{job}.py" and (ROOT / "jobs" / f"{job}.py").is_file()
    args = [str(ROOT / a.removeprefix(IN_IMAGE)) if a.startswith(IN_IMAGE) else a for a in args]
    for a in args:
        if a.startswith(str(ROOT)):
            assert Path(a).is_file(), f"{a} is not shipped"
    argv = job_argv(JOBS[job], args)
    command = typer.main.get_command(app).commands[argv[0]]  # type: ignore[attr-defined]
    command.make_context(argv[0], argv[1:])  # raises on an unknown option or a bad value


@pytest.mark.parametrize("manifest", ["rayservice.yaml", *(f"rayjob-{j}.yaml" for j in JOBS)])
def test_every_pod_runs_the_image_of_the_pinned_ray(manifest: str) -> None:
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\S+?)-py(\d)(\d+)", dockerfile, re.M)
    assert base, "the Dockerfile builds on a rayproject/ray image"
    ray_version, py = base.group(1), f"{base.group(2)}.{base.group(3)}"
    assert _matches(ray_version, _pin("ray")) and ray_version == ray.__version__
    assert (
        py
        == _pyproject()["tool"]["mypy"]["python_version"]
        == f"{sys.version_info[0]}.{sys.version_info[1]}"
    )
    assert f"torch=={_pin('torch')}" in dockerfile
    cluster = dict(_clusters())[manifest]
    assert cluster["rayVersion"] == ray_version
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert images == {"ghcr.io/example/ray-app:0.1.0"}, "one image, built by the Dockerfile"
    assert images == {f"ghcr.io/example/ray-app:{_pyproject()['project']['version']}"}
