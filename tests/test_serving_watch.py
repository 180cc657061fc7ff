"""Registry watching without Ray: a real registry, the real verify-and-load path."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import interactions, wait_until

from ray_app.models.popularity import Popularity
from ray_app.registry.store import ALIASES, Registry
from ray_app.serving.app import build_app
from ray_app.serving.config import ServeArgs
from ray_app.serving.watch import RegistryWatcher


def _model(seed: int) -> Popularity:
    rng = np.random.default_rng(seed)
    pairs = [(f"u{u}", f"m{i}") for u in range(30) for i in rng.choice(20, size=5, replace=False)]
    return Popularity().fit(interactions(pairs))


def tampered_version(reg: Registry, tmp: Path, seed: int) -> str:
    """Register in a side registry, flip a byte, then move it in whole (no half-seen state)."""
    side = Registry(tmp / f"side{seed}", reg.signing)
    mv = side.register(_model(seed))
    target = next((mv.path / "artifact").iterdir())
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    shutil.move(str(mv.path), str(Path(reg.uri) / "popularity" / mv.version))
    return mv.version


class Slot:
    """What a ModelServer keeps: the served version, swapped only after a verified load."""

    def __init__(self, reg: Registry, follow: str) -> None:
        self.reg, self.follow = reg, follow
        self.version = reg.latest("popularity") or ""
        self.watcher = RegistryWatcher(
            self.followed, lambda: self.version, self.switch, registry=reg
        )

    def followed(self) -> tuple[str, str | None]:
        return "popularity", self.reg.resolve("popularity", self.follow)

    def switch(self, name: str, version: str) -> Any:
        _, mv = self.reg.load(name, version)  # verifies signature and hashes first
        self.version = mv.version


def test_follows_latest_refuses_tampered_and_respects_admin(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    v1 = reg.register(_model(1)).version
    slot = Slot(reg, "latest")
    assert slot.watcher.check_once() is None  # first look only records the starting point
    v2 = reg.register(_model(2)).version
    assert slot.watcher.check_once() == v2 and slot.version == v2
    bad = tampered_version(reg, tmp_path, 3)
    assert reg.latest("popularity") == bad
    assert slot.watcher.check_once() is None
    assert slot.version == v2, "a tampered version must leave the old one serving"
    assert "artifact/" in slot.watcher.refused[bad]  # the error names the file
    assert slot.watcher.check_once() is None and len(slot.watcher.refused) == 1  # not retried
    slot.switch("popularity", v1)  # an operator pins v1 through /admin
    assert slot.watcher.check_once() is None and slot.version == v1  # not undone
    v4 = reg.register(_model(4)).version
    assert slot.watcher.check_once() == v4  # ...until a new version appears


def test_follows_an_alias_not_every_registration(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    v1 = reg.register(_model(1)).version
    reg.set_alias("popularity", "production", v1)
    slot = Slot(reg, "production")
    slot.version = v1
    slot.watcher.check_once()
    v2 = reg.register(_model(2)).version  # a candidate, not promoted yet
    assert slot.watcher.check_once() is None and slot.version == v1
    reg.set_alias("popularity", "production", v2)  # what retraining does on promote
    assert slot.watcher.check_once() == v2
    with pytest.raises(ValueError, match="no version"):
        reg.set_alias("popularity", "production", "v0")
    with pytest.raises(ValueError, match="latest"):
        reg.set_alias("popularity", "latest", v1)


def test_follow_latest_never_takes_an_old_version_renamed_to_look_newest(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    v1 = reg.register(_model(1)).version
    slot = Slot(reg, "latest")
    slot.watcher.check_once()
    v2 = reg.register(_model(2)).version
    assert slot.watcher.check_once() == v2
    forged = "v99991231T235959999999Z"
    (tmp_path / "reg" / "popularity" / v1).rename(tmp_path / "reg" / "popularity" / forged)
    assert slot.watcher.check_once() is None and slot.version == v2
    assert reg.latest("popularity") == v2 and not slot.watcher.refused
    v3 = reg.register(_model(3)).version  # a real new version still gets through
    assert slot.watcher.check_once() == v3


def test_follow_refuses_a_downgrade_unless_allowed(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    v1 = reg.register(_model(1)).version
    reg.set_alias("popularity", "production", v1)
    old_aliases = (tmp_path / "reg" / "popularity" / ALIASES).read_bytes()  # signed, genuine
    v2 = reg.register(_model(2)).version
    reg.set_alias("popularity", "production", v2)
    slot = Slot(reg, "production")
    slot.version = v2
    slot.watcher.check_once()
    # A replayed (validly signed) old aliases file moves production back to v1.
    (tmp_path / "reg" / "popularity" / ALIASES).write_bytes(old_aliases)
    assert slot.watcher.check_once() is None and slot.version == v2
    assert "DowngradeError" in slot.watcher.refused[v1]
    reg.set_alias("popularity", "production", v2)
    slot.watcher.check_once()
    slot.watcher.configure(0, allow_downgrade=True)  # an operator's explicit rollback
    reg.set_alias("popularity", "production", v1)
    assert slot.watcher.check_once() == v1 and slot.version == v1
    assert slot.watcher.state()["allow_downgrade"] is True


def test_background_thread_picks_up_a_new_version(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.register(_model(1))
    slot = Slot(reg, "latest")
    slot.watcher.configure(0.05)
    try:
        # the first poll only records the starting point; a version registered after it moves
        wait_until(lambda: slot.watcher.last_check is not None, timeout=10, interval=0.02)
        v2 = reg.register(_model(2)).version
        wait_until(lambda: slot.version == v2, timeout=10, interval=0.05, what="the switch")
        assert slot.watcher.running
    finally:
        slot.watcher.configure(0)
    assert not slot.watcher.running


def test_unreadable_registry_is_reported_not_raised(tmp_path: Path) -> None:
    def broken() -> tuple[str, str | None]:
        raise OSError("registry bucket unreachable")

    w = RegistryWatcher(broken, lambda: "v1", lambda n, v: None)
    assert w.check_once() is None and "unreachable" in (w.state()["last_error"] or "")


def test_serve_config_yaml_is_valid() -> None:
    doc = yaml.safe_load(Path("serve_config.yaml").read_text())
    args = ServeArgs.model_validate(doc["applications"][0]["args"])
    assert {v.name: v.follow for v in args.variants}["A"] == "production"
    ingress: Any = build_app(args)._bound_deployment  # what `serve deploy` runs, not started
    router = ingress.init_kwargs["router"]._bound_deployment
    assert router.user_config["weights"] == {"A": 0.9, "B": 0.1, "canary": 0.0}
