"""Fetch and load MovieLens.

``fetch("ml-100k")`` tries the official GroupLens zip first (checked against the MD5 that
GroupLens publishes next to it), then falls back to the copy that ships inside the
``recbole==1.2.1`` wheel (checked by SHA-256 of the wheel and of each file). Nothing of MovieLens
is ever committed to this repository: its licence forbids redistribution.

Every loader returns the same three frames:

* ratings: ``user_id`` (str), ``item_id`` (str), ``rating`` (float32), ``timestamp`` (int64, s)
* movies:  ``item_id``, ``title``, ``year`` (Int64, nullable), ``genres`` (list of str)
* users:   ``user_id``, ``age`` (Int64), ``gender``, ``occupation`` (empty when unknown)
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import platformdirs

from ray_app.config import ConfigError
from ray_app.errors import UserError

log = logging.getLogger(__name__)

GROUPLENS = "https://files.grouplens.org/datasets/movielens"

# name -> (zip URL, published MD5 of the zip). GroupLens publishes MD5s beside each archive;
# an empty pin means "read <url>.md5 at download time" (for the moving ml-latest-small).
OFFICIAL: dict[str, tuple[str, str]] = {
    "ml-100k": (f"{GROUPLENS}/ml-100k.zip", "0e33842e24a9c977be4e0107933c0723"),
    "ml-1m": (f"{GROUPLENS}/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906"),
    "ml-25m": (f"{GROUPLENS}/ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada"),
    "ml-latest-small": (f"{GROUPLENS}/ml-latest-small.zip", ""),
}

RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_FILES_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}

ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


class ChecksumError(RuntimeError):
    """A downloaded file does not match its published checksum."""


class FetchError(UserError, RuntimeError):
    """No source could deliver a dataset; the message lists what each source said."""


@dataclass(frozen=True)
class MovieLens:
    """A loaded MovieLens dataset."""

    name: str
    ratings: pd.DataFrame
    movies: pd.DataFrame
    users: pd.DataFrame
    source: str


def cache_dir() -> Path:
    """Where datasets are cached (``$XDG_CACHE_HOME/ray-app`` or the platform equivalent)."""
    return Path(platformdirs.user_cache_dir("ray-app"))


def _digest(data: bytes | Path, algo: str) -> str:
    h = hashlib.new(algo)
    if isinstance(data, Path):
        with data.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    else:
        h.update(data)
    return h.hexdigest()


def _fetch_official(name: str, dest: Path, timeout_s: float) -> Path:
    url, md5 = OFFICIAL[name]
    log.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        payload = resp.read()
    if not md5:
        # ml-latest-small changes with each GroupLens refresh, so no checksum can be pinned;
        # GroupLens publishes the current one beside the zip.
        with urllib.request.urlopen(url + ".md5", timeout=timeout_s) as resp:
            md5 = resp.read().decode().split()[0].strip()
    got = _digest(payload, "md5")
    if got != md5:
        raise ChecksumError(f"{url}: md5 {got} != published {md5}")
    sha = _digest(payload, "sha256")
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        zf.extractall(dest)
    (dest / name / "SOURCE").write_text(f"{url}\nmd5 {got}\nsha256 {sha}\n")
    return dest / name


def _fetch_recbole(dest: Path) -> Path:
    """Extract ml-100k from the recbole wheel on PyPI (no install: it pins an old Ray)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                tmp,
                RECBOLE_WHEEL,
            ],
            check=True,
        )
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if not wheels:
            raise FileNotFoundError(f"pip download {RECBOLE_WHEEL} produced no wheel in {tmp}")
        wheel = wheels[0]
        got = _digest(wheel, "sha256")
        if got != RECBOLE_WHEEL_SHA256:
            raise ChecksumError(f"{wheel.name}: sha256 {got} != expected {RECBOLE_WHEEL_SHA256}")
        out = dest / "ml-100k"
        out.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            for fname, sha in RECBOLE_FILES_SHA256.items():
                data = zf.read(f"recbole/dataset_example/ml-100k/{fname}")
                if _digest(data, "sha256") != sha:
                    raise ChecksumError(f"{fname} in {wheel.name}: sha256 mismatch")
                (out / fname).write_bytes(data)
        (out / "SOURCE").write_text(f"pypi:{RECBOLE_WHEEL}\nwheel sha256 {got}\n")
    return out


def fetch(
    name: str = "ml-100k",
    root: Path | None = None,
    *,
    offline_fallback: bool = True,
    try_official: bool = True,
    timeout_s: float = 20.0,
) -> Path:
    """Download ``name`` into the cache (once) and return its directory."""
    if name not in OFFICIAL:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {sorted(OFFICIAL)}")
    root = root or cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    if (target / "SOURCE").exists():
        return target
    errors: list[str] = []
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        staged: Path | None = None
        if try_official:
            try:
                staged = _fetch_official(name, Path(tmp), timeout_s)
            except Exception as exc:  # network refused, checksum, bad zip: try the fallback
                errors.append(f"official: {exc}")
                log.warning("official download of %s failed (%s)", name, exc)
        if staged is None and name == "ml-100k" and offline_fallback:
            try:
                staged = _fetch_recbole(Path(tmp))
            except Exception as exc:
                errors.append(f"recbole wheel: {exc}")
        if staged is None:
            raise FetchError(
                f"could not fetch {name} ({'; '.join(errors)}); check network access to "
                f"{GROUPLENS} (and to PyPI for ml-100k) and retry"
            )
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    return target


_YEAR = re.compile(r"\((\d{4})\)\s*$")


def load(name: str = "ml-100k", root: Path | None = None) -> MovieLens:
    """Fetch if needed and load ``name`` in the common frame layout."""
    path = fetch(name, root)
    source = (path / "SOURCE").read_text().splitlines()[0]
    if (path / "ml-100k.inter").exists():
        return _load_recbole_100k(path, source)
    if name == "ml-100k":
        return _load_grouplens_100k(path, source)
    if name == "ml-1m":
        return _load_grouplens_1m(path, source)
    return _load_grouplens_csv(name, path, source)


def _load_recbole_100k(path: Path, source: str) -> MovieLens:
    r = pd.read_csv(path / "ml-100k.inter", sep="\t", dtype=str)
    r.columns = ["user_id", "item_id", "rating", "timestamp"]
    ratings = _ratings_frame(r)
    m = pd.read_csv(path / "ml-100k.item", sep="\t", dtype=str, keep_default_na=False)
    m.columns = ["item_id", "title", "year", "genres"]
    movies = pd.DataFrame(
        {
            "item_id": m["item_id"],
            "title": m["title"],
            "year": pd.to_numeric(m["year"], errors="coerce").astype("Int64"),
            "genres": m["genres"].str.split(" ").map(lambda g: [x for x in g if x]),
        }
    )
    u = pd.read_csv(path / "ml-100k.user", sep="\t", dtype=str, keep_default_na=False)
    u.columns = ["user_id", "age", "gender", "occupation", "zip_code"]
    return MovieLens("ml-100k", ratings, movies, _users_frame(u), source)


def _load_grouplens_100k(path: Path, source: str) -> MovieLens:
    r = pd.read_csv(
        path / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"], dtype=str
    )
    cols = ["item_id", "title", "release", "video", "url", *ML100K_GENRES]
    m = pd.read_csv(
        path / "u.item", sep="|", names=cols, encoding="latin-1", dtype=str, keep_default_na=False
    )
    flags = m[ML100K_GENRES].astype(int).to_numpy().astype(bool)
    movies = pd.DataFrame(
        {
            "item_id": m["item_id"],
            "title": m["title"].str.replace(_YEAR, "", regex=True).str.strip(),
            "year": pd.to_numeric(m["title"].str.extract(_YEAR)[0], errors="coerce").astype(
                "Int64"
            ),
            "genres": [[g for g, f in zip(ML100K_GENRES, row, strict=True) if f] for row in flags],
        }
    )
    u = pd.read_csv(
        path / "u.user",
        sep="|",
        names=["user_id", "age", "gender", "occupation", "zip_code"],
        dtype=str,
    )
    return MovieLens("ml-100k", _ratings_frame(r), movies, _users_frame(u), source)


def _load_grouplens_1m(path: Path, source: str) -> MovieLens:
    def dat(f: str, names: list[str]) -> pd.DataFrame:
        return pd.read_csv(
            path / f, sep="::", engine="python", names=names, encoding="latin-1", dtype=str
        )

    r = dat("ratings.dat", ["user_id", "item_id", "rating", "timestamp"])
    m = dat("movies.dat", ["item_id", "title", "genres"])
    u = dat("users.dat", ["user_id", "gender", "age", "occupation", "zip_code"])
    movies = pd.DataFrame(
        {
            "item_id": m["item_id"],
            "title": m["title"].str.replace(_YEAR, "", regex=True).str.strip(),
            "year": pd.to_numeric(m["title"].str.extract(_YEAR)[0], errors="coerce").astype(
                "Int64"
            ),
            "genres": m["genres"].str.split("|"),
        }
    )
    return MovieLens("ml-1m", _ratings_frame(r), movies, _users_frame(u), source)


def _load_grouplens_csv(name: str, path: Path, source: str) -> MovieLens:
    r = pd.read_csv(path / "ratings.csv", dtype=str)
    r = r.rename(columns={"userId": "user_id", "movieId": "item_id"})
    m = pd.read_csv(path / "movies.csv", dtype=str, keep_default_na=False)
    movies = pd.DataFrame(
        {
            "item_id": m["movieId"],
            "title": m["title"].str.replace(_YEAR, "", regex=True).str.strip(),
            "year": pd.to_numeric(m["title"].str.extract(_YEAR)[0], errors="coerce").astype(
                "Int64"
            ),
            "genres": m["genres"]
            .str.split("|")
            .map(lambda g: [x for x in g if x != "(no genres listed)"]),
        }
    )
    users = pd.DataFrame({"user_id": pd.unique(r["user_id"])})
    return MovieLens(name, _ratings_frame(r), movies, _users_frame(users), source)


def _ratings_frame(r: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": r["user_id"].astype(str),
            "item_id": r["item_id"].astype(str),
            "rating": pd.to_numeric(r["rating"]).astype("float32"),
            "timestamp": pd.to_numeric(r["timestamp"]).astype("int64"),
        }
    )


def _users_frame(u: pd.DataFrame) -> pd.DataFrame:
    def col(c: str) -> pd.Series:
        return u[c].astype(str) if c in u.columns else pd.Series([""] * len(u), dtype=str)

    return pd.DataFrame(
        {
            "user_id": u["user_id"].astype(str),
            "age": pd.to_numeric(u["age"], errors="coerce").astype("Int64")
            if "age" in u.columns
            else pd.array([pd.NA] * len(u), dtype="Int64"),
            "gender": col("gender"),
            "occupation": col("occupation"),
        }
    )
