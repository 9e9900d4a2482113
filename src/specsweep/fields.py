"""Bounds declared next to each config field, and the one routine that checks them all.

    k: Optional[int] = bounded(None, ge=1, le=64)  # read as: null, or an integer in [1, 64]

Closed sets are enums (OmegaConf rejects anything else when the config is composed); numeric ranges are declared
with `bounded`; rules that involve several fields live in each config's `check()`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Tuple

from specsweep.core import Problem


@dataclass(frozen=True)
class Bounds:
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    min_items: Optional[int] = None  # lists: at least this many entries
    each: bool = False  # lists: the numeric bounds apply to every entry
    null: str = ""  # what null means, when the field may be null ("torch's default", "all prompts", ...)

    def violated(self, value: Any) -> bool:
        if self.min_items is not None and len(value) < self.min_items:
            return True
        values = value if self.each else [value]
        return any(
            (self.ge is not None and v < self.ge)
            or (self.gt is not None and v <= self.gt)
            or (self.le is not None and v > self.le)
            or (self.lt is not None and v >= self.lt)
            for v in values
        )

    def describe(self, integer: bool) -> str:
        kind = "an integer" if integer else "a number"
        low = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        high = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None
        if self.min_items is not None:
            text = f"a list of at least {self.min_items} item(s)"
        elif low and high:
            text = f"{kind} in {low}, {high}"
        elif low:
            text = f"{kind} {'>=' if low[0] == '[' else '>'} {low[1:]}"
        else:
            text = f"{kind} {'<=' if high[-1] == ']' else '<'} {high[:-1]}"
        if self.each:
            text = f"a list of {text.replace('an integer', 'integers').replace('a number', 'numbers')}"
        return f"{text}, or null for {self.null}" if self.null else text


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def bounded(default: Any = None, *, factory: Any = None, **bounds: Any) -> Any:
    """A dataclass field whose value must lie within `bounds` (see Bounds); null always passes where allowed."""
    meta = {"bounds": Bounds(**bounds)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _is_integer(node: Any, name: str) -> bool:
    hint = typing.get_type_hints(type(node)).get(name)
    args = typing.get_args(hint)
    while args and hint not in (int, float):
        hint = next((a for a in args if a is not type(None)), None)
        args = typing.get_args(hint)
    return hint is int


def _walk(node: Any, prefix: str) -> Iterator[Tuple[str, Any, Any, Bounds]]:
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _walk(value, f"{path}.")
        elif "bounds" in f.metadata and value is not None:
            yield path, node, f.name, f.metadata["bounds"]


def bound_problems(cfg: Any) -> List[Problem]:
    """Every field of the config tree whose value is outside its declared bounds."""
    problems = []
    for path, node, name, bounds in _walk(cfg, ""):
        value = getattr(node, name)
        if bounds.violated(value):
            shown = list(value) if isinstance(value, (list, tuple)) else value
            problems.append((path, shown, bounds.describe(_is_integer(node, name))))
    return problems
