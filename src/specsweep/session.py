"""Everything that outlives one job in this process, in one object with one eviction rule.

Hydra's basic launcher runs a whole sweep in one process, so loaded models, a kept vLLM engine, measured baselines,
the measured draft/target cost ratio, idle power and validated configs can serve later jobs. They all live in named
slots of one `Session`, created by `main.py` and passed explicitly down from `app.run`; tests create a fresh one.

The rule, the same for every slot: a slot holds at most `capacity` entries; when a new entry must be made, the least
recently used ones are evicted (and closed) *before* it is made, so memory never holds more than `capacity` at once.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any, Callable, Dict, Hashable, Optional


class Slot:
    """A least-recently-used store of at most `capacity` entries; `close(value)` runs on every evicted entry."""

    def __init__(self, name: str, capacity: int, close: Optional[Callable[[Any], None]] = None):
        if capacity < 1:
            raise ValueError(f"slot {name!r}: capacity={capacity} is invalid: expected >= 1")
        self.name, self.capacity, self._close = name, capacity, close
        self._entries: "OrderedDict[Hashable, Any]" = OrderedDict()
        self.created: Counter = Counter()  # how many times each key was made in this process

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list:
        return list(self._entries)

    def get(self, key: Hashable) -> Any:
        """The entry (now the most recently used), or None."""
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key]

    def get_or_create(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if key in self._entries:
            return self.get(key)
        self._make_room(1)
        value = make()
        self._entries[key] = value
        self.created[key] += 1
        return value

    def put(self, key: Hashable, value: Any) -> None:
        """Store `value` (replacing and closing an older entry under the same key unless it is the same object)."""
        old = self._entries.pop(key, None)
        if old is not None and old is not value:
            self._evict(old)
        self._make_room(1)
        self._entries[key] = value

    def take(self, key: Hashable) -> Any:
        """Remove and return the entry without closing it (the caller now owns it), or None."""
        return self._entries.pop(key, None)

    def clear(self) -> None:
        while self._entries:
            self._evict(self._entries.popitem(last=False)[1])

    def _make_room(self, needed: int) -> None:
        while self._entries and len(self._entries) + needed > self.capacity:
            self._evict(self._entries.popitem(last=False)[1])

    def _evict(self, value: Any) -> None:
        if self._close is not None:
            self._close(value)


class Session:
    """Named slots shared by the jobs of one process. `slot()` makes a slot on first use and returns it after."""

    def __init__(self) -> None:
        self._slots: Dict[str, Slot] = {}

    def slot(self, name: str, capacity: int = 1, close: Optional[Callable[[Any], None]] = None) -> Slot:
        if name not in self._slots:
            self._slots[name] = Slot(name, capacity, close)
        return self._slots[name]

    def close(self) -> None:
        """Evict everything (stops kept engine processes); the session stays usable."""
        for slot in self._slots.values():
            slot.clear()

    def __getstate__(self) -> Dict[str, Any]:
        # A launcher that pickles the task function (submitit) starts each job with an empty session of its own.
        return {"_slots": {}}
