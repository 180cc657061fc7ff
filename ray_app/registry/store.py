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

A signature binds a version to its place: loading checks that the signed manifest's ``name``
and ``version`` equal the directory it was read from, so a signed version copied or renamed
under another name or version is refused, and :meth:`Registry.latest` skips it. Names, versions
and aliases are single path components (:func:`check_component`). Aliases are signed too, over
the model name and the alias map, so an edited, unsigned or copied ``_aliases.json`` is refused.
A downgrade (a version created before the one serving) is refused unless asked for.
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
from ray_app.registry.binding import (
    COMPONENT,
    DowngradeError,
    check_binding,
    check_component,
    created_at,
)
from ray_app.registry.signing import (
    SignatureError,
    SigningConfig,
    SigningKeyError,
    sign,
    verify,
)

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
        name = check_component("model name", model.name if name is None else name)
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
            # The binding that loading checks: ``extra`` may not move a version elsewhere.
            manifest.update(name=name, version=version)
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
            and COMPONENT.fullmatch(i.base_name)
            and self.versions(i.base_name)
        )

    def versions(self, name: str) -> list[str]:
        """Versions of ``name``, oldest first (on an object store: only those whose upload
        finished, i.e. whose signature exists)."""
        check_component("model name", name)
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(name), allow_not_found=True))
        found = sorted(
            i.base_name
            for i in infos
            if i.type == pafs.FileType.Directory
            and i.base_name.startswith("v")
            and COMPONENT.fullmatch(i.base_name)
        )
        if self._is_local():
            return found
        signatures = self.fs.get_file_info([self.path(name, v, SIGNATURE) for v in found])
        return [v for v, i in zip(found, signatures, strict=True) if i.type == pafs.FileType.File]

    def latest(self, name: str) -> str | None:
        """The newest version of ``name`` whose signed manifest is bound to its directory;
        None when it has none. A version copied or renamed to sort last is skipped, so it can
        never stand in for the newest (its artifact files are checked when it is loaded)."""
        for version in reversed(self.versions(name)):
            try:
                self.signed_manifest(name, version)
            except SigningKeyError:
                raise  # no key to verify with: say so, rather than "no versions"
            except (SignatureError, FileNotFoundError):
                continue  # an unreadable registry, though, is an error, not an older version
            return version
        return None

    def signed_manifest(self, name: str, version: str) -> dict[str, Any]:
        """The manifest of ``name``/``version`` after checking its signature and that it names
        this very place (not the artifact hashes: :meth:`fetch` checks those before loading)."""
        check_component("model name", name)
        check_component("version", version)
        what = self.path(name, version, MANIFEST)
        with self.fs.open_input_stream(what) as fh:
            payload = fh.read()
        try:
            with self.fs.open_input_stream(self.path(name, version, SIGNATURE)) as fh:
                record = json.loads(fh.read())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise SignatureError(f"{name}/{version}: missing or unreadable signature") from exc
        verify(payload, record, self.signing, f"{name}/{version}/{MANIFEST}")
        manifest: dict[str, Any] = json.loads(payload)
        check_binding(manifest, name, version)
        return manifest

    def aliases(self, name: str) -> dict[str, str]:
        """Alias → version for ``name`` (e.g. ``production``, set when retraining promotes),
        after verifying the aliases file's signature; SignatureError if it was tampered with,
        is unsigned or belongs to another model."""
        check_component("model name", name)
        path = self.path(name, ALIASES)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return {}
        with self.fs.open_input_stream(path) as fh:
            raw = fh.read()
        what = f"{name}/{ALIASES}"
        try:
            doc = json.loads(raw)
            record = doc["signature"]
            body = {"model": doc["model"], "aliases": doc["aliases"]}
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise SignatureError(
                f"{what}: unsigned or malformed aliases file; point each alias again with "
                "Registry.set_alias (or promote again with `ray-app retrain`)"
            ) from exc
        verify(_canonical(body), record, self.signing, what)
        if body["model"] != name:
            raise SignatureError(f"{what}: signed for model {body['model']!r}, not {name!r}")
        table = {str(k): str(v) for k, v in dict(body["aliases"]).items()}
        for alias, version in table.items():
            check_component("alias", alias)
            check_component("version", version)
        return table

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` of ``name`` at ``version`` (a version bound to its place) and sign
        the alias map."""
        check_component("alias", alias)
        if alias == "latest":
            raise ValueError("'latest' is not an alias: it always means the newest version")
        check_component("version", version)
        if version not in self.versions(name):
            raise ValueError(f"{name} has no version {version!r}; versions: {self.versions(name)}")
        self.signed_manifest(name, version)  # never alias a copied or renamed version
        current = self.aliases(name)
        current[alias] = version
        body = {"model": name, "aliases": dict(sorted(current.items()))}
        doc = {**body, "signature": sign(_canonical(body), self.signing)}
        self.fs.create_dir(self.path(name), recursive=True)
        # Write then move, so a watching server never reads half a file.
        tmp = self.path(name, f".{ALIASES}.tmp")
        with self.fs.open_output_stream(tmp) as fh:
            fh.write(json.dumps(doc, indent=2, sort_keys=True).encode())
        self.fs.move(tmp, self.path(name, ALIASES))

    def resolve(self, name: str, ref: str) -> str | None:
        """The version ``ref`` names: ``latest`` or an alias; None when it names nothing yet."""
        check_component("reference", ref)
        if ref == "latest":
            return self.latest(name)
        return self.aliases(name).get(ref)

    def read_manifest(self, name: str, version: str) -> dict[str, Any]:
        """The manifest (unverified: for listing only, never for loading)."""
        check_component("model name", name)
        check_component("version", version)
        with self.fs.open_input_stream(self.path(name, version, MANIFEST)) as fh:
            return dict(json.loads(fh.read()))

    def check_upgrade(
        self, name: str, version: str, serving: str, *, allow_downgrade: bool = False
    ) -> None:
        """Raise :class:`DowngradeError` if ``version`` of ``name`` was created (by its signed
        manifest's ``created_at``) before ``serving``, unless ``allow_downgrade``."""
        if allow_downgrade or version == serving:
            return
        new = created_at(self.signed_manifest(name, version))
        try:
            old = created_at(self.signed_manifest(name, serving))
        except FileNotFoundError:
            # the serving version was deleted: whatever "latest" is now may be older
            raise DowngradeError(
                f"{name} {serving} (serving) is no longer in the registry, so {version} may be "
                "older than the serving version; pass allow_downgrade to move to it"
            ) from None
        if new < old:
            raise DowngradeError(
                f"{name} {version} (created {new.isoformat()}) is older than the serving "
                f"{serving} (created {old.isoformat()}); pass allow_downgrade to roll back"
            )

    def fetch(
        self,
        name: str,
        version: str | None = None,
        *,
        serving: str | None = None,
        allow_downgrade: bool = False,
    ) -> ModelVersion:
        """Verify a version (signature, binding to ``name``/``version``, then every file hash)
        and return its local path.

        Raises :class:`SignatureError` naming the offending file if anything does not match;
        nothing is unpickled or imported before this check passes. With ``serving`` (the
        version now served), a version created before it raises :class:`DowngradeError`
        unless ``allow_downgrade``.
        """
        check_component("model name", name)
        version = check_component("version", version) if version is not None else self.latest(name)
        if version is None:
            raise FileNotFoundError(f"registry {self.uri} has no versions of model {name!r}")
        if self._is_local():
            local = Path(self.path(name, version))
            manifest = verify_dir(local, self.signing, name, version)
        else:
            local = self._download(name, version)
            try:
                manifest = verify_dir(local, self.signing, name, version)
            except SignatureError:  # perhaps a damaged cached copy: verify a fresh download
                shutil.rmtree(local, ignore_errors=True)
                local = self._download(name, version)
                manifest = verify_dir(local, self.signing, name, version)
        if serving is not None:
            self.check_upgrade(name, version, serving, allow_downgrade=allow_downgrade)
        return ModelVersion(name, version, local, manifest)

    def _download(self, name: str, version: str) -> Path:
        """A local copy of a version in the cache. Versions are immutable, so a cached copy is
        reused (it is verified like any other); several processes on one host may download
        the same version at once, so each downloads into its own directory and renames it."""
        check_component("model name", name)
        check_component("version", version)
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

    def load(
        self,
        name: str,
        version: str | None = None,
        *,
        serving: str | None = None,
        allow_downgrade: bool = False,
    ) -> tuple[Recommender[Any], ModelVersion]:
        """Verify (as :meth:`fetch`, downgrade check included), then load a version's model."""
        from ray_app.models.catalog import MODELS

        mv = self.fetch(name, version, serving=serving, allow_downgrade=allow_downgrade)
        cls = MODELS.get(mv.manifest["model_class"])
        if cls is None:
            raise ValueError(
                f"{mv.path}/{MANIFEST}: unknown model_class {mv.manifest['model_class']!r}"
            )
        return cls.load(mv.path / "artifact"), mv


def _canonical(body: dict[str, Any]) -> bytes:
    """The exact bytes an aliases file's signature covers."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def verify_dir(path: Path, signing: SigningConfig, name: str, version: str) -> dict[str, Any]:
    """Check ``path``'s signature, that it is ``name``/``version`` and its file hashes; return
    the manifest or raise SignatureError."""
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
    check_binding(manifest, name, version)
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
