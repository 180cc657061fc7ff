"""Copy serve_config.yaml into rayservice.yaml's ``serveConfigV2`` (``--check``: only compare).

    python deploy/kuberay/sync_serve_config.py           # rewrite the generated block
    python deploy/kuberay/sync_serve_config.py --check   # exit 1 when it is stale

The block between the BEGIN/END markers is serve_config.yaml's text, comments included, indented
under ``serveConfigV2: |``; the rest of the manifest is left as written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = Path(__file__).with_name("rayservice.yaml")
BEGIN = "# BEGIN serve_config.yaml (generated)"
END = "# END serve_config.yaml"
INDENT = "    "


def rendered(manifest: str, serve_config: str) -> str:
    """``manifest`` with the generated block replaced by ``serve_config``."""
    head, sep, rest = manifest.partition(INDENT + BEGIN + "\n")
    _, sep2, tail = rest.partition(INDENT + END + "\n")
    if not (sep and sep2):
        raise SystemExit(f"{MANIFEST}: the BEGIN/END markers of serveConfigV2 are missing")
    body = "".join(
        (INDENT + line if line.strip() else "\n")
        for line in serve_config.rstrip("\n").splitlines(keepends=True)
    )
    return f"{head}{INDENT}{BEGIN}\n{body}\n{INDENT}{END}\n{tail}"


def main(argv: list[str]) -> int:
    """Rewrite (or with ``--check`` compare) the manifest; 1 when ``--check`` finds it stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    args = parser.parse_args(argv)
    current = MANIFEST.read_text()
    wanted = rendered(current, (ROOT / "serve_config.yaml").read_text())
    if current == wanted:
        return 0
    if args.check:
        print(f"{MANIFEST} is stale: run python deploy/kuberay/sync_serve_config.py")
        return 1
    MANIFEST.write_text(wanted)
    print(f"updated serveConfigV2 in {MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
