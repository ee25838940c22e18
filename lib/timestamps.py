"""Timestamp parsing: the proxy writes RFC 3339 local time with offsets, JSONL writes UTC with `Z`."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional, overload


def parse_timestamp(value: object) -> Optional[datetime]:
    """Parse an RFC 3339 / ISO 8601 string into an aware datetime; None when unparsable.

    Naive values (the proxy's `created_at`) are taken as UTC.

    >>> parse_timestamp("2026-03-25T15:43:05-04:00").isoformat()
    '2026-03-25T15:43:05-04:00'
    >>> parse_timestamp("2026-11-30T03:20:43.514Z").tzinfo is not None
    True
    """
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


@overload
def to_epoch(value: datetime) -> float: ...
@overload
def to_epoch(value: None) -> None: ...
@overload
def to_epoch(value: Optional[datetime]) -> Optional[float]: ...
def to_epoch(value: Optional[datetime]) -> Optional[float]:
    """Seconds since the epoch, or None."""
    return value.timestamp() if value is not None else None


@overload
def from_epoch(seconds: float) -> datetime: ...
@overload
def from_epoch(seconds: None) -> None: ...
@overload
def from_epoch(seconds: Optional[float]) -> Optional[datetime]: ...
def from_epoch(seconds: Optional[float]) -> Optional[datetime]:
    """An aware UTC datetime from epoch seconds, or None."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc) if seconds is not None else None
