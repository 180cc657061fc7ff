"""The model registry: ``<root>/<model name>/<version>/`` directories.

Each version directory holds the artifact files, ``manifest.json`` (name, version, config, code
version, training snapshot batches, offline metrics, created-at, and the SHA-256 of every
artifact file) and ``signature.json`` over the manifest's exact bytes. ``root`` is a local path
or any pyarrow filesystem URI (``s3://…``, ``gs://…``; an S3-compatible endpoint and credentials
may ride in the URI, ``s3://KEY:SECRET@bucket/models?endpoint_override=host:9000&scheme=http``,
so that Serve replicas need no environment). Versions are staged locally and copied up: on a
local filesystem into a hidden directory that is then renamed; on an object store, which cannot
rename, with ``signature.json`` uploaded last and versions without one not listed. Remote
versions are downloaded once into a local cache per registry and verified on every load.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import pyarrow.fs as pafs

import ray_app
from ray_app.models.base import Recommender
from ray_app.paths import resolve_location
from ray_app.registry.signing import SignatureError, SigningConfig, sign, verify

MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
ALIASES = "_aliases.json"  # per model, beside the signed (immutable) version directories


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{ray_app.__version__}+{sha}" if sha else ray_app.__version__


@dataclass(frozen=True)
class ModelVersion:
    """A verified, locally available registry version."""

    name: str
    version: str
    path: Path
    manifest: dict[str, Any]


class Registry:
    """Register, list, verify and load model versions."""

    def __init__(
        self, root: str | Path, signing: SigningConfig | None = None, cache: Path | None = None
    ) -> None:
        self.uri = str(root)
        self.signing = signing or SigningConfig()
        self.fs, self.base = pafs.FileSystem.from_uri(resolve_location(self.uri))
        self.cache = cache or Path(platformdirs.user_cache_dir("ray-app")) / "registry"

    def path(self, *parts: str) -> str:
        """The registry filesystem path of ``parts`` under the root (for :attr:`fs`)."""
        return "/".join([self.base.rstrip("/"), *parts])

    def _is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    # ---- writing ------------------------------------------------------------------------
    def register(
        self,
        model: Recommender[Any],
        *,
        metrics: dict[str, Any] | None = None,
        snapshot: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> ModelVersion:
        """Save ``model`` as a new signed version of ``name`` (default: the model's name)."""
        name = name or model.name
        now = dt.datetime.now(dt.UTC)
        version = now.strftime("v%Y%m%dT%H%M%S%fZ")
        with tempfile.TemporaryDirectory() as tmp:
            stage = Path(tmp) / version
            files = model.save(stage / "artifact")
            manifest: dict[str, Any] = {
                "name": name,
                "version": version,
                "model_class": model.name,
                "config": model.config.model_dump(mode="json"),
                "code_version": code_version(),
                "created_at": now.isoformat(),
                "snapshot": snapshot or {},
                "metrics": metrics or {},
                "files": {f"artifact/{f}": _sha256(stage / "artifact" / f) for f in sorted(files)},
                **(extra or {}),
            }
            payload = json.dumps(manifest, indent=2, sort_keys=True).encode()
            (stage / MANIFEST).write_bytes(payload)
            (stage / SIGNATURE).write_text(json.dumps(sign(payload, self.signing), indent=2))
            self._publish(stage, name, version)
        return self.fetch(name, version)

    def _publish(self, stage: Path, name: str, version: str) -> None:
        """Copy a staged version into the registry so that readers never see half of it."""
        local = pafs.LocalFileSystem()
        self.fs.create_dir(self.path(name), recursive=True)
        if self._is_local():
            # Copy into a hidden name, then rename: the version appears whole.
            hidden = self.path(name, f".incoming-{version}")
            pafs.copy_files(str(stage), hidden, local, self.fs)
            self.fs.move(hidden, self.path(name, version))
            return
        # Object stores cannot rename a directory: upload everything but the signature, then
        # the signature, which :meth:`versions` requires before it lists a version.
        for f in sorted(p for p in stage.rglob("*") if p.is_file() and p.name != SIGNATURE):
            pafs.copy_files(
                str(f), self.path(name, version, f.relative_to(stage).as_posix()), local, self.fs
            )
        with self.fs.open_output_stream(self.path(name, version, SIGNATURE)) as fh:
            fh.write((stage / SIGNATURE).read_bytes())

    # ---- reading ------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Model names that have at least one version."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
        except FileNotFoundError:
            return []
        return sorted(
            i.base_name
            for i in infos
            if i.type == pafs.FileType.Directory
            and not i.base_name.startswith(".")
            and self.versions(i.base_name)
        )

    def versions(self, name: str) -> list[str]:
        """Versions of ``name``, oldest first (on an object store: only those whose upload
        finished, i.e. whose signature exists)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(name), allow_not_found=True))
        found = sorted(
            i.base_name
            for i in infos
            if i.type == pafs.FileType.Directory and i.base_name.startswith("v")
        )
        if self._is_local():
            return found
        signatures = self.fs.get_file_info([self.path(name, v, SIGNATURE) for v in found])
        return [v for v, i in zip(found, signatures, strict=True) if i.type == pafs.FileType.File]

    def latest(self, name: str) -> str | None:
        """The newest version of ``name``; None when it has none."""
        vs = self.versions(name)
        return vs[-1] if vs else None

    def aliases(self, name: str) -> dict[str, str]:
        """Alias → version for ``name`` (e.g. ``production``, set when retraining promotes)."""
        path = self.path(name, ALIASES)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return {}
        with self.fs.open_input_stream(path) as fh:
            return dict(json.loads(fh.read()))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` of ``name`` at ``version`` (the version must exist)."""
        if alias == "latest":
            raise ValueError("'latest' is not an alias: it always means the newest version")
        if version not in self.versions(name):
            raise ValueError(f"{name} has no version {version!r}; versions: {self.versions(name)}")
        current = self.aliases(name)
        current[alias] = version
        self.fs.create_dir(self.path(name), recursive=True)
        # Write then move, so a watching server never reads half a file.
        tmp = self.path(name, f".{ALIASES}.tmp")
        with self.fs.open_output_stream(tmp) as fh:
            fh.write(json.dumps(current, indent=2, sort_keys=True).encode())
        self.fs.move(tmp, self.path(name, ALIASES))

    def resolve(self, name: str, ref: str) -> str | None:
        """The version ``ref`` names: ``latest`` or an alias; None when it names nothing yet."""
        if ref == "latest":
            return self.latest(name)
        return self.aliases(name).get(ref)

    def read_manifest(self, name: str, version: str) -> dict[str, Any]:
        """The manifest (unverified: for listing only, never for loading)."""
        with self.fs.open_input_stream(self.path(name, version, MANIFEST)) as fh:
            return dict(json.loads(fh.read()))

    def fetch(self, name: str, version: str | None = None) -> ModelVersion:
        """Verify a version (signature, then every file hash) and return its local path.

        Raises :class:`SignatureError` naming the offending file if anything does not match;
        nothing is unpickled or imported before this check passes.
        """
        version = version or self.latest(name)
        if version is None:
            raise FileNotFoundError(f"registry {self.uri} has no versions of model {name!r}")
        if self._is_local():
            local = Path(self.path(name, version))
            return ModelVersion(name, version, local, verify_dir(local, self.signing))
        local = self._download(name, version)
        try:
            manifest = verify_dir(local, self.signing)
        except SignatureError:  # perhaps a damaged cached copy: verify a fresh download
            shutil.rmtree(local, ignore_errors=True)
            local = self._download(name, version)
            manifest = verify_dir(local, self.signing)
        return ModelVersion(name, version, local, manifest)

    def _download(self, name: str, version: str) -> Path:
        """A local copy of a version in the cache. Versions are immutable, so a cached copy is
        reused (it is verified like any other); several processes on one host may download
        the same version at once, so each downloads into its own directory and renames it."""
        root = hashlib.sha256(self.uri.encode()).hexdigest()[:16]  # one cache per registry
        local = self.cache / root / name / version
        if local.exists():
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.parent / f".download-{uuid.uuid4().hex}"
        pafs.copy_files(self.path(name, version), str(tmp), self.fs, pafs.LocalFileSystem())
        try:
            tmp.rename(local)
        except OSError:  # another process finished first: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
        return local

    def load(self, name: str, version: str | None = None) -> tuple[Recommender[Any], ModelVersion]:
        """Verify, then load the model of a version."""
        from ray_app.models.catalog import MODELS

        mv = self.fetch(name, version)
        cls = MODELS.get(mv.manifest["model_class"])
        if cls is None:
            raise ValueError(
                f"{mv.path}/{MANIFEST}: unknown model_class {mv.manifest['model_class']!r}"
            )
        return cls.load(mv.path / "artifact"), mv


def verify_dir(path: Path, signing: SigningConfig) -> dict[str, Any]:
    """Check ``path``'s signature and file hashes; return the manifest or raise SignatureError."""
    mpath, spath = path / MANIFEST, path / SIGNATURE
    if not mpath.exists():
        raise SignatureError(f"{mpath}: missing manifest")
    if not spath.exists():
        raise SignatureError(f"{spath}: missing signature (unsigned version)")
    payload = mpath.read_bytes()
    try:
        record = json.loads(spath.read_text())
    except json.JSONDecodeError as exc:
        raise SignatureError(f"{spath}: not valid JSON") from exc
    verify(payload, record, signing, str(mpath))
    manifest: dict[str, Any] = json.loads(payload)
    listed: dict[str, str] = manifest.get("files", {})
    for rel, want in listed.items():
        f = path / rel
        if not f.exists():
            raise SignatureError(f"{f}: listed in manifest but missing")
        if _sha256(f) != want:
            raise SignatureError(f"{f}: SHA-256 does not match the signed manifest (tampered)")
    for f in path.rglob("*"):
        rel = f.relative_to(path).as_posix()
        if f.is_file() and rel not in listed and rel not in (MANIFEST, SIGNATURE):
            raise SignatureError(f"{f}: file not listed in the signed manifest")
    return manifest


# ---- item metadata (genres) for re-ranking -----------------------------------------------
ITEM_METADATA = "_item_metadata.json"
ITEM_METADATA_SIGNATURE = "_item_metadata.signature.json"


def write_item_metadata(registry: Registry, genres: dict[str, list[str]]) -> str:
    """Store item → genres at the registry root, signed like a version; returns its path.

    The file sits beside the model directories (``models()`` only lists directories), so one
    catalogue serves every model version; the serving re-ranker reads it with
    :func:`read_item_metadata`.
    """
    payload = json.dumps({"genres": genres}, sort_keys=True).encode()
    sig = json.dumps(sign(payload, registry.signing)).encode()
    registry.fs.create_dir(registry.base, recursive=True)
    for name, data in ((ITEM_METADATA, payload), (ITEM_METADATA_SIGNATURE, sig)):
        with registry.fs.open_output_stream(registry.path(name)) as fh:
            fh.write(data)
    return registry.path(ITEM_METADATA)


def read_item_metadata(registry: Registry) -> dict[str, list[str]]:
    """Verified item → genres map; empty when none was written. Raises SignatureError if tampered."""
    path = registry.path(ITEM_METADATA)
    if registry.fs.get_file_info(path).type != pafs.FileType.File:
        return {}
    with registry.fs.open_input_stream(path) as fh:
        payload = fh.read()
    try:
        with registry.fs.open_input_stream(registry.path(ITEM_METADATA_SIGNATURE)) as fh:
            record = json.loads(fh.read())
    except (FileNotFoundError, OSError, json.JSONDecodeError) as exc:
        raise SignatureError(f"{path}: missing or unreadable signature") from exc
    verify(payload, record, registry.signing, path)
    genres: dict[str, list[str]] = json.loads(payload)["genres"]
    return genres
