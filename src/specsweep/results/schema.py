"""The JSON Schema of result.json, generated from the types in `results.types`, and the README contract table
generated from that schema. scripts/result_schema.py writes both; tests/test_result_schema.py checks they are current.

pydantic (generation) and jsonschema (validation) are imported where used: recording a job needs neither.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List

SCHEMA_PATH = Path("docs") / "result.schema.json"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
README_START = "<!-- result-contract:start -->"
README_END = "<!-- result-contract:end -->"


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _tighten(node: Dict[str, Any]) -> None:
    """What the serializer guarantees, said in the schema: every field is always written (null when unknown, so
    every property is required) and no other key appears. Per-property titles and construction defaults go."""
    props = node.get("properties")
    if props is None:
        return
    for prop in props.values():
        prop.pop("title", None)
        prop.pop("default", None)
        if "description" in prop:
            prop["description"] = _one_line(prop["description"])
    node["required"] = list(props)
    node["additionalProperties"] = False
    if "description" in node:
        node["description"] = _one_line(node["description"])


def result_schema() -> Dict[str, Any]:
    """The JSON Schema (draft 2020-12) of result.json, from `results.types.Result`."""
    from pydantic import TypeAdapter

    from specsweep.results.types import Result

    schema = TypeAdapter(Result).json_schema()
    for definition in schema.get("$defs", {}).values():
        _tighten(definition)
    _tighten(schema)
    return {"$schema": SCHEMA_DIALECT, **schema}


def schema_text(schema: Dict[str, Any]) -> str:
    return json.dumps(schema, indent=2) + "\n"


def validation_errors(instance: Any, schema: Dict[str, Any]) -> List[str]:
    """Every way `instance` breaks `schema`, one line each with where (empty: valid). An error inside a section that
    may also be null is reported where it is, not as "the section is not valid under any of the given schemas"."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    validator = Draft202012Validator(schema)
    errors = sorted((best_match([e]) for e in validator.iter_errors(instance)), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]


def _section(prop: Dict[str, Any], defs: Dict[str, Any]) -> Dict[str, Any] | None:
    """The object definition a property holds (directly, as null-or-it, or as a list of it), if any."""
    for option in prop.get("anyOf", [prop]):
        ref = option.get("$ref") or option.get("items", {}).get("$ref")
        if ref:
            return defs[ref.rsplit("/", 1)[-1]]
    return None


def contract_table(schema: Dict[str, Any]) -> str:
    """The README's result.json contract: one row per top-level field; a section row lists its keys."""
    defs = schema.get("$defs", {})
    rows = ["| field | meaning |", "| --- | --- |"]
    for name, prop in schema["properties"].items():
        meaning = prop.get("description", "")
        section = _section(prop, defs)
        if section is not None:
            meaning += ": " + ", ".join(f"`{key}`" for key in section["properties"])
        rows.append(f"| `{name}` | {meaning.replace('|', '/')} |")
    return "\n".join(rows)


def readme_with_contract(readme: str, schema: Dict[str, Any]) -> str:
    """`readme` with the text between the contract markers replaced by the generated table."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {README_START} ... {README_END} block")
    return readme[: start + len(README_START)] + "\n" + contract_table(schema) + "\n" + readme[end:]
