"""docs/THREAT_MODEL.md stays honest: every test it names exists, every threat names a test or
says "none yet", and the threats the project must answer for are all there."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "THREAT_MODEL.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
ROW = re.compile(r"^\| ([A-Z]\d+) \|(.*)\|\s*$", re.M)
REQUIRED = {
    "K": ["spoofed producers", "flooding producers", "schema poisoning", "topic deletion"],
    "A": ["scraping", "enumeration of users", "model-switch abuse", "rate-limit bypass"],
    "R": ["tampered artifacts", "unsigned versions", "replayed artifacts"],
    "D": ["shilling", "feedback loops", "privacy of user histories"],
}


@cache
def _tests_in(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_every_named_test_exists() -> None:
    refs = REFERENCE.findall(DOC.read_text())
    assert len(refs) >= 20
    missing = [
        f"{path}::{name}"
        for path, name in refs
        if not (ROOT / path).is_file() or name not in _tests_in(path)
    ]
    assert not missing, f"THREAT_MODEL.md names tests that do not exist: {missing}"


def test_every_threat_names_a_test_or_says_none_yet() -> None:
    rows = ROW.findall(DOC.read_text())
    assert len(rows) >= 16
    for threat_id, cells in rows:
        proof = cells.rsplit("|", 1)[-1]
        assert REFERENCE.search(proof) or "none yet" in proof, f"{threat_id} has no proof cell"


def test_the_required_threats_are_covered() -> None:
    rows = dict(ROW.findall(DOC.read_text().replace("*", "")))
    for prefix, names in REQUIRED.items():
        text = " ".join(v.lower() for k, v in rows.items() if k.startswith(prefix))
        for name in names:
            assert name in text, f"no {prefix} threat about {name!r}"
    assert "injection through ids" in " ".join(rows.values()).lower()
