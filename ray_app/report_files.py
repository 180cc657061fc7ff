"""Report files: every report the project writes is a JSON document and its HTML rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json_and_html(
    report: dict[str, Any], html: str, out_dir: Path | str
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` under ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    j, h = out / "report.json", out / "report.html"
    j.write_text(json.dumps(report, indent=2, default=str))
    h.write_text(html)
    return j, h
