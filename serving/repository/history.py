"""A model's history of pins: which version served when, and which ones were rejected.

Rollback and prune follow this history, not version numbers: after 3 was rolled back to 2 and 4
was pushed, the version before 4 is 2 (3 was rejected), and 2 is the one prune must keep.

Stored as `<model>/history.json` beside the model-level config.pbtxt (Triton ignores it):

    {"serving": 4,
     "events": [{"event": "pinned", "version": 1, "previous": null, "via": "push", "at": "..."},
                {"event": "rejected", "version": 3, "reason": "rolled back to 2", "at": "..."}, ...]}

Writing it is the commit point of a push or rollback: one atomic write names the new serving
version and records the event. A version never pinned (a push cut off before its commit) is not
verified: it is never "unchanged", never a rollback target, and prune removes it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from serving.repository.store import RepositoryError

PINNED = "pinned"
REJECTED = "rejected"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")  # metadata only, never logic


@dataclass(frozen=True)
class History:
    serving: int | None = None
    events: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    # --- reading ---------------------------------------------------------------------------------
    @classmethod
    def parse(cls, data: bytes, where: str) -> History:
        try:
            raw = json.loads(data)
            serving = raw.get("serving")
            events = tuple(dict(e) for e in raw.get("events", []))
            if serving is not None and not isinstance(serving, int):
                raise TypeError("serving must be a version number or null")
            if not all(isinstance(e.get("version"), int) and e.get("event") in (PINNED, REJECTED) for e in events):
                raise TypeError("every event needs an integer version and event 'pinned' or 'rejected'")
        except (ValueError, TypeError, AttributeError) as error:
            raise RepositoryError(f"{where} is not a valid pin history ({error}); restore it from a backup") from None
        return cls(serving, events)

    @classmethod
    def synthesized(cls, pinned: int | None, stored: list[int]) -> History:
        """For a repository written before histories existed: every stored version up to the
        pinned one counts as served once, in order; newer ones as never verified."""
        if pinned is None:
            return cls()
        events = tuple({"event": PINNED, "version": v, "via": "before-history"} for v in stored if v <= pinned)
        return cls(pinned, events)

    def to_bytes(self) -> bytes:
        return (json.dumps({"serving": self.serving, "events": list(self.events)}, indent=2) + "\n").encode()

    def was_pinned(self, version: int) -> bool:
        return any(e["event"] == PINNED and e["version"] == version for e in self.events)

    def is_rejected(self, version: int) -> bool:
        """Rejected when the latest event about the version is a rejection."""
        latest = [e["event"] for e in self.events if e["version"] == version]
        return bool(latest) and latest[-1] == REJECTED

    def is_good(self, version: int) -> bool:
        """Served once and not rejected since."""
        return self.was_pinned(version) and not self.is_rejected(version)

    def pinned_newest_first(self) -> list[int]:
        """Distinct versions in the order they were last pinned, the most recent first."""
        seen: list[int] = []
        for event in reversed(self.events):
            if event["event"] == PINNED and event["version"] not in seen:
                seen.append(event["version"])
        return seen

    def rollback_target(self, stored: list[int]) -> int | None:
        """The most recently served good version other than the serving one that is still stored."""
        return next(
            (v for v in self.pinned_newest_first() if v != self.serving and v in stored and self.is_good(v)),
            None,
        )

    def keep(self, stored: list[int], retention: int) -> set[int]:
        """What prune keeps: the serving version, its rollback target, and the `retention` most
        recently served good versions. Rejected and never-verified versions are not kept."""
        good = [v for v in self.pinned_newest_first() if v in stored and self.is_good(v)]
        keep = set(good[:retention])
        keep |= {v for v in (self.serving, self.rollback_target(stored)) if v is not None}
        return keep

    # --- changing (each returns a new History) ---------------------------------------------------
    def pinned(self, version: int, via: str, reject_previous: str | None = None) -> History:
        """`version` serves from now on; with `reject_previous`, the one it replaces is rejected."""
        events = list(self.events)
        if reject_previous is not None and self.serving is not None and self.serving != version:
            events.append({"event": REJECTED, "version": self.serving, "reason": reject_previous, "at": _now()})
        events.append({"event": PINNED, "version": version, "previous": self.serving, "via": via, "at": _now()})
        return History(version, tuple(events))

    def rejected(self, version: int, reason: str) -> History:
        event = {"event": REJECTED, "version": version, "reason": reason, "at": _now()}
        return History(self.serving, (*self.events, event))
