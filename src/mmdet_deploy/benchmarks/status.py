"""Typed outcome of a benchmark row, batch size or target: a small enum plus a detail string.

Code decides with :class:`Status` (``status_of(record).ok``), never by comparing strings; the text
(``"ok"``, ``"failed: RuntimeError: ..."``, ``"unavailable: tensorrt not installed"``) is made only where a
record is written for the report (``report.json`` / ``report.md``) or a worker's JSON reply, by
:attr:`RowStatus.text`, and read back by :meth:`RowStatus.parse`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Status(Enum):
    """What happened. ``NOT_RUN`` carries only its detail as text (e.g. why the end-to-end part did not run)."""

    OK = "ok"
    FAILED = "failed"
    UNAVAILABLE = "unavailable"  # a hardware or software requirement is not met here
    SKIPPED = "skipped"  # runnable, but not asked for (another --device, a flag not given)
    NOT_APPLICABLE = "n/a"  # the question does not apply (batch above the artefact's maximum, target without data)
    AVAILABLE = "available"  # a row that can run here (before it ran)
    MET = "met"
    NOT_MET = "not met"
    NOT_RUN = "not run"


@dataclass(frozen=True)
class RowStatus:
    """A :class:`Status` and its detail (the reason, the error's one line)."""

    kind: Status
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.kind is Status.OK

    @property
    def text(self) -> str:
        """The report's spelling: ``kind`` or ``kind: detail`` (``NOT_RUN``: the detail alone)."""
        if self.kind is Status.NOT_RUN:
            return self.detail or Status.NOT_RUN.value
        return f"{self.kind.value}: {self.detail}" if self.detail else self.kind.value

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, text: str | None) -> RowStatus:
        """The status written as ``text`` (None or empty: ``failed: no status``)."""
        if not text:
            return cls(Status.FAILED, "no status")
        for kind in Status:
            if text == kind.value:
                return cls(kind)
            if text.startswith(kind.value + ": "):
                return cls(kind, text[len(kind.value) + 2 :])
        return cls(Status.NOT_RUN, text)


#: The end-to-end part's status when ``--no-e2e`` turned it off.
E2E_DISABLED = RowStatus(Status.NOT_RUN, "end-to-end not run (--no-e2e)").text


def ok() -> str:
    """The text of a row or batch that ran."""
    return RowStatus(Status.OK).text


def failed(detail: str) -> str:
    return RowStatus(Status.FAILED, detail).text


def not_applicable(detail: str) -> str:
    return RowStatus(Status.NOT_APPLICABLE, detail).text


def not_run(detail: str) -> str:
    return RowStatus(Status.NOT_RUN, detail).text


def status_of(record: Mapping[str, Any] | None) -> RowStatus:
    """The status of a report record (a row, a batch figure, a target, the end-to-end part)."""
    return RowStatus.parse(None if record is None else record.get("status"))


def is_ok(record: Mapping[str, Any] | None) -> bool:
    """True when ``record`` exists and ran."""
    return record is not None and status_of(record).ok
