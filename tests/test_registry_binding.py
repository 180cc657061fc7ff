"""A signature binds a version to its place: copy, rename, path and alias attacks on a real
registry directory (local disk, and a real S3-compatible server for the object-store path)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
from helpers import interactions, serve_replica

from ray_app.models.popularity import Popularity
from ray_app.registry import lifecycle
from ray_app.registry.binding import DowngradeError, RegistryNameError
from ray_app.registry.signing import SignatureError, SigningConfig, SigningKeyError
from ray_app.registry.store import ALIASES, Registry
from ray_app.serving.model_server import ModelServer

# Sorts after any version registered today: what an attacker picks to look newest.
FAR_FUTURE = "v99991231T235959999999Z"


def _model(seed: int) -> Popularity:
    rng = np.random.default_rng(seed)
    pairs = [(f"u{u}", f"m{i}") for u in range(20) for i in rng.choice(15, size=4, replace=False)]
    return Popularity().fit(interactions(pairs))


def test_version_copied_under_a_newer_name_is_refused_and_never_latest(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    v1 = reg.register(_model(1)).version
    v2 = reg.register(_model(2)).version
    shutil.copytree(
        tmp_path / "reg" / "popularity" / v1, tmp_path / "reg" / "popularity" / FAR_FUTURE
    )
    assert reg.versions("popularity")[-1] == FAR_FUTURE  # listed, since it is a directory...
    assert reg.latest("popularity") == v2  # ...but never taken for the newest
    assert reg.resolve("popularity", "latest") == v2
    assert reg.fetch("popularity").version == v2
    with pytest.raises(SignatureError, match="copied or renamed"):
        reg.fetch("popularity", FAR_FUTURE)
    with pytest.raises(SignatureError, match="copied or renamed"):
        reg.set_alias("popularity", "production", FAR_FUTURE)


def test_version_renamed_under_another_model_is_refused(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    mv = reg.register(_model(1))
    reg.register(_model(2), name="itemknn")
    (tmp_path / "reg" / "popularity" / mv.version).rename(tmp_path / "reg" / "itemknn" / mv.version)
    with pytest.raises(SignatureError, match="signed as 'popularity'"):
        reg.load("itemknn", mv.version)


def test_extra_manifest_fields_cannot_move_a_version(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    mv = reg.register(_model(1), extra={"name": "itemknn", "version": FAR_FUTURE})
    assert (mv.name, mv.manifest["name"]) == ("popularity", "popularity")
    assert mv.manifest["version"] == mv.version != FAR_FUTURE


@pytest.mark.parametrize("bad", ["..", ".", "", ".hidden", "a/b", "a\\b", "../popularity", "x\n"])
def test_path_components_are_refused_at_every_entry(tmp_path: Path, bad: str) -> None:
    reg = Registry(tmp_path / "reg")
    v = reg.register(_model(1)).version
    calls = [
        lambda: reg.fetch(bad, v),
        lambda: reg.fetch("popularity", bad),
        lambda: reg.load(bad),
        lambda: reg.versions(bad),
        lambda: reg.latest(bad),
        lambda: reg.aliases(bad),
        lambda: reg.resolve("popularity", bad),
        lambda: reg.set_alias("popularity", bad, v),
        lambda: reg.set_alias("popularity", "production", bad),
        lambda: reg.read_manifest("popularity", bad),
        lambda: reg.register(_model(2), name=bad),
        lambda: lifecycle.append_events(reg, "popularity", bad, [{"step": "x"}]),
        lambda: lifecycle.events(reg, bad, v),
    ]
    for call in calls:
        with pytest.raises(RegistryNameError, match="invalid"):
            call()
    # Nothing was written outside the model's directory.
    assert sorted(p.name for p in (tmp_path / "reg").iterdir()) == ["popularity"]


def test_odd_directories_never_become_a_model_or_the_latest(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    v = reg.register(_model(1)).version
    shutil.copytree(tmp_path / "reg" / "popularity" / v, tmp_path / "reg" / "popularity" / "v..")
    (tmp_path / "reg" / ".popularity").mkdir()
    shutil.copytree(tmp_path / "reg" / "popularity" / v, tmp_path / "reg" / ".popularity" / v)
    assert reg.models() == ["popularity"]
    assert reg.latest("popularity") == v


def test_aliases_are_signed_and_bound_to_their_model(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    v1 = reg.register(_model(1)).version
    v2 = reg.register(_model(2)).version
    reg.set_alias("popularity", "production", v1)
    assert reg.resolve("popularity", "production") == v1
    path = tmp_path / "reg" / "popularity" / ALIASES

    doc = json.loads(path.read_text())
    doc["aliases"]["production"] = v2  # re-pointed by hand, signature kept
    path.write_text(json.dumps(doc))
    with pytest.raises(SignatureError, match="does not match"):
        reg.resolve("popularity", "production")

    path.write_text(json.dumps({"production": v2}))  # the old, unsigned format
    with pytest.raises(SignatureError, match="unsigned"):
        reg.aliases("popularity")

    # A genuine aliases file of another model, copied over.
    reg.register(_model(3), name="itemknn")
    reg.set_alias("itemknn", "production", reg.latest("itemknn") or "")
    shutil.copy(tmp_path / "reg" / "itemknn" / ALIASES, path)
    with pytest.raises(SignatureError, match="signed for model 'itemknn'"):
        reg.resolve("popularity", "production")


def test_no_key_is_reported_not_mistaken_for_no_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Registry(tmp_path / "reg").register(_model(1))
    monkeypatch.delenv("RAY_APP_REGISTRY_HMAC_KEY")
    keyless = Registry(tmp_path / "reg", SigningConfig(key_file=tmp_path / "absent.key"))
    with pytest.raises(SigningKeyError, match="no HMAC key"):
        keyless.latest("popularity")


def test_a_downgrade_is_refused_unless_asked_for(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    v1 = reg.register(_model(1)).version
    v2 = reg.register(_model(2)).version
    with pytest.raises(DowngradeError, match="older than the serving"):
        reg.load("popularity", v1, serving=v2)
    _, mv = reg.load("popularity", v1, serving=v2, allow_downgrade=True)
    assert mv.version == v1
    assert reg.load("popularity", v2, serving=v1)[1].version == v2  # upgrades pass
    reg.check_upgrade("popularity", v2, v2)  # staying put is no downgrade


def test_model_server_reload_and_follow_skip_a_renamed_old_version(tmp_path: Path) -> None:
    """What ``/admin/reload`` (``latest()`` then ``switch``) and ``follow: latest`` do on a
    real ModelServer replica object (built without Ray)."""
    reg = Registry(tmp_path / "reg")
    v1 = reg.register(_model(1)).version
    server = serve_replica(ModelServer, registry=reg.uri, signing=reg.signing, model="popularity")
    server.reconfigure({"follow": "latest"})
    server.watcher.check_once()
    v2 = reg.register(_model(2)).version
    assert server.watcher.check_once() == v2
    (tmp_path / "reg" / "popularity" / v1).rename(tmp_path / "reg" / "popularity" / FAR_FUTURE)
    assert server.latest() == v2  # what reload compares with: nothing to do
    assert server.watcher.check_once() is None and server.info()["version"] == v2
    with pytest.raises(SignatureError, match="copied or renamed"):
        server._swap("popularity", FAR_FUTURE)  # an explicit admin switch to it
    with pytest.raises(RegistryNameError):
        server._swap("..", v2)
    assert server.info()["version"] == v2


@pytest.mark.integration
def test_copy_and_alias_attacks_on_object_storage(s3_uri: str, tmp_path: Path) -> None:
    reg = Registry(s3_uri, cache=tmp_path / "cache")
    v1 = reg.register(_model(1)).version
    v2 = reg.register(_model(2)).version
    # Copy every object of v1 under a newer-looking version and under another model name.
    for target in (("popularity", FAR_FUTURE), ("itemknn", v1)):
        pafs.copy_files(reg.path("popularity", v1), reg.path(*target), reg.fs, reg.fs)
    assert FAR_FUTURE in reg.versions("popularity")
    assert reg.latest("popularity") == v2
    with pytest.raises(SignatureError, match="copied or renamed"):
        reg.fetch("popularity", FAR_FUTURE)
    with pytest.raises(SignatureError, match="copied or renamed"):
        reg.fetch("itemknn", v1)
    assert reg.latest("itemknn") is None

    reg.set_alias("popularity", "production", v2)
    alias_path = reg.path("popularity", ALIASES)
    with reg.fs.open_input_stream(alias_path) as fh:
        doc = json.loads(fh.read())
    doc["aliases"]["production"] = v1
    with reg.fs.open_output_stream(alias_path) as fh:
        fh.write(json.dumps(doc).encode())
    with pytest.raises(SignatureError, match="does not match"):
        Registry(s3_uri, cache=tmp_path / "cache2").resolve("popularity", "production")
    with pytest.raises(DowngradeError):
        reg.load("popularity", v1, serving=v2)


def test_a_following_model_server_refuses_to_move_back_unless_allowed(tmp_path: Path) -> None:
    """Deleting the newest version makes ``latest`` older: the slot stays, unless allowed."""
    reg = Registry(tmp_path / "reg")
    v1 = reg.register(_model(1)).version
    v2 = reg.register(_model(2)).version
    server = serve_replica(ModelServer, registry=reg.uri, signing=reg.signing, model="popularity")
    server.reconfigure({"follow": "latest"})
    server.watcher.check_once()  # the starting point
    assert server.info()["version"] == v2
    shutil.rmtree(tmp_path / "reg" / "popularity" / v2)
    assert server.watcher.check_once() is None and server.info()["version"] == v2
    assert "DowngradeError" in " ".join(server.watcher.state()["refused"].values())
    with pytest.raises(DowngradeError):
        server._swap("popularity", None)  # what /admin/reload does
    server.reconfigure({"follow": "latest", "allow_downgrade": True})
    server._swap("popularity", None)
    assert server.info()["version"] == v1
