"""Registry: signing, verification, tamper detection (no Ray needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ray_app.models.base import Interactions
from ray_app.models.popularity import Popularity
from ray_app.registry import lifecycle
from ray_app.registry.signing import SignatureError, SigningConfig, generate_ed25519
from ray_app.registry.store import Registry


def _model() -> Popularity:
    frame = pd.DataFrame({"user_id": ["a", "a", "b", "c"], "item_id": ["x", "y", "x", "z"]})
    return Popularity().fit(Interactions.from_frame(frame))


def test_register_then_load_round_trip(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    mv = reg.register(_model(), metrics={"ndcg@10": 0.5}, snapshot={"files": ["a.parquet"]})
    assert reg.models() == ["popularity"]
    assert reg.latest("popularity") == mv.version
    model, loaded = reg.load("popularity")
    assert loaded.manifest["metrics"] == {"ndcg@10": 0.5}
    assert loaded.manifest["snapshot"] == {"files": ["a.parquet"]}
    assert set(loaded.manifest) >= {
        "name",
        "version",
        "config",
        "code_version",
        "created_at",
        "files",
    }
    # b has seen x; y and z tie on popularity and keep catalogue order
    assert model.recommend(["b"], k=2).items[0] == ["y", "z"]


def test_flipped_byte_is_refused_naming_the_file(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    mv = reg.register(_model())
    target = mv.path / "artifact" / "state.npz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match=r"state\.npz"):
        reg.load("popularity", mv.version)


def test_edited_manifest_and_unsigned_and_extra_files_are_refused(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    mv = reg.register(_model())
    manifest = json.loads((mv.path / "manifest.json").read_text())
    manifest["metrics"] = {"ndcg@10": 0.99}
    (mv.path / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    with pytest.raises(SignatureError, match=r"manifest\.json"):
        reg.fetch("popularity", mv.version)

    mv2 = reg.register(_model())
    (mv2.path / "artifact" / "evil.pkl").write_bytes(b"x")
    with pytest.raises(SignatureError, match=r"evil\.pkl"):
        reg.fetch("popularity", mv2.version)

    mv3 = reg.register(_model())
    (mv3.path / "signature.json").unlink()
    with pytest.raises(SignatureError, match="unsigned"):
        reg.fetch("popularity", mv3.version)


def test_other_key_is_refused(tmp_path: Path) -> None:
    mv = Registry(tmp_path, SigningConfig(hmac_key="key-one")).register(_model())  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match="HMAC"):
        Registry(tmp_path, SigningConfig(hmac_key="key-two")).fetch("popularity", mv.version)  # type: ignore[arg-type]


def test_ed25519_sign_with_private_verify_with_public(tmp_path: Path) -> None:
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    generate_ed25519(priv, pub)
    signer = Registry(
        tmp_path / "reg", SigningConfig(algorithm="ed25519", ed25519_private_key_file=priv)
    )
    mv = signer.register(_model())
    verifier = Registry(
        tmp_path / "reg", SigningConfig(algorithm="ed25519", ed25519_public_key_file=pub)
    )
    assert verifier.fetch("popularity", mv.version).manifest["version"] == mv.version
    generate_ed25519(tmp_path / "o.pem", tmp_path / "o.pub")
    other = Registry(
        tmp_path / "reg",
        SigningConfig(algorithm="ed25519", ed25519_public_key_file=tmp_path / "o.pub"),
    )
    with pytest.raises(SignatureError, match="Ed25519"):
        other.fetch("popularity", mv.version)


def test_lifecycle_log_sits_beside_the_version_and_keeps_given_times(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    mv = reg.register(_model())
    earlier = {"ts": "2026-01-01T00:00:00+00:00", "step": "checked_data", "new_batches": 2}
    lifecycle.append_events(reg, "popularity", mv.version, [earlier])
    now = lifecycle.lifecycle_event("promoted", requests=40)
    lifecycle.append_events(reg, "popularity", mv.version, [now])
    assert lifecycle.events(reg, "popularity", mv.version) == [earlier, now]
    log_file = Path(reg.path("popularity", "_lifecycle", f"{mv.version}.jsonl"))
    assert log_file.read_text().count("\n") == 2
    # The log is outside the signed version directory, so the version still verifies.
    assert reg.fetch("popularity", mv.version).version == mv.version
    assert reg.versions("popularity") == [mv.version]
    assert lifecycle.events(reg, "popularity", "v-none") == []
