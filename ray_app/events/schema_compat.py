"""The additive-only rule for the JSON Schemas of event records.

A new version of a topic's schema may only add optional properties. Removing a property,
changing what a property accepts, making an optional property required (or a required one
optional) and changing the record-level keywords are all refused. Every problem is one line
that names the topic, the versions, the field and the rule, e.g.
``events.reco_responses v1→v2: field 'status' was removed (rule: a published field is never
removed)``.

Annotations (``title``, ``description``, ``default``, ``examples``…) do not change what a
record may hold, so they are ignored.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any, Final

ANNOTATIONS: Final = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated"}
)
# Keywords whose value maps names to subschemas: a property named "title" is not an annotation.
_NAME_MAPS: Final = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
_RECORD_LEVEL_SKIP: Final = frozenset({"properties", "required"})


def without_annotations(node: Any, *, names: bool = False) -> Any:
    """``node`` with every annotation keyword removed, recursively (``names``: ``node`` maps
    property names to subschemas, so its keys are kept whatever they are)."""
    if isinstance(node, dict):
        if names:
            return {k: without_annotations(v) for k, v in node.items()}
        return {
            k: without_annotations(v, names=k in _NAME_MAPS)
            for k, v in node.items()
            if k not in ANNOTATIONS
        }
    if isinstance(node, list):
        return [without_annotations(item) for item in node]
    return node


def _show(schema: Any) -> str:
    return json.dumps(without_annotations(schema), sort_keys=True, separators=(",", ":"))


def additive_problems(
    topic: str,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    old_version: int,
    new_version: int,
) -> list[str]:
    """Why ``new`` is not an additive successor of ``old`` (empty: it is), one line each."""
    where = f"{topic} v{old_version}→v{new_version}"
    old_props: Mapping[str, Any] = old.get("properties", {})
    new_props: Mapping[str, Any] = new.get("properties", {})
    old_req, new_req = set(old.get("required", ())), set(new.get("required", ()))
    problems: list[str] = []
    for name, was in old_props.items():
        if name not in new_props:
            problems.append(
                f"{where}: field {name!r} was removed (rule: a published field is never removed)"
            )
            continue
        now = new_props[name]
        if without_annotations(was) != without_annotations(now):
            problems.append(
                f"{where}: field {name!r} changed type from {_show(was)} to {_show(now)} "
                "(rule: a published field keeps its type)"
            )
        if name in new_req and name not in old_req:
            problems.append(
                f"{where}: optional field {name!r} became required "
                "(rule: only optional fields may be added; old records lack it)"
            )
        if name in old_req and name not in new_req:
            problems.append(
                f"{where}: required field {name!r} became optional "
                "(rule: readers of earlier versions rely on it)"
            )
    for name in (n for n in new.get("required", ()) if n not in old_props):
        problems.append(
            f"{where}: new field {name!r} is required (rule: new fields must be optional)"
        )
    keywords = (set(old) | set(new)) - _RECORD_LEVEL_SKIP - ANNOTATIONS
    for key in sorted(keywords):
        before, after = old.get(key), new.get(key)
        if without_annotations(before) != without_annotations(after):
            problems.append(
                f"{where}: record keyword {key!r} changed from {_show(before)} to {_show(after)} "
                "(rule: a new version may only add optional fields)"
            )
    return problems


def history_problems(topic: str, versions: Mapping[int, Mapping[str, Any]]) -> list[str]:
    """Problems of a topic's whole published history: versions 1..N without gaps, each an
    additive successor of the one before."""
    numbers = sorted(versions)
    if numbers != list(range(1, len(numbers) + 1)):
        return [f"{topic}: published versions are {numbers}; they must be 1..N without gaps"]
    problems: list[str] = []
    for a, b in itertools.pairwise(numbers):
        problems += additive_problems(topic, versions[a], versions[b], old_version=a, new_version=b)
    return problems
