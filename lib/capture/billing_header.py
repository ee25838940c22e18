"""Claude Code's billing header: the attribution block the API strips before caching (docs/traces.md).

Claude Code (since about 2.1.29) sends `x-anthropic-billing-header: cc_version=<ver>.<3 hex>;
cc_entrypoint=<...>; cch=<5 hex>;` (fields vary by version) as the first `system` text block of
parents and sub-agents alike; in many versions the suffix and `cch` are derived from the body and
change on every request. The Anthropic API strips this block before processing, so its cache
never sees it. We drop it too, before tokenizing and hashing: hashed verbatim it would make every
block after the tools differ on every request, and a neutralized copy would still count tokens
the API never caches.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Hashable, Optional

HEADER_NAME = "x-anthropic-billing-header"
PREFIX = HEADER_NAME + ":"
# The header line as it sits in a stored body when it needs no escape: printable ASCII up to the
# quote ending the JSON string or the backslash of the `\n` ending the line.
RAW_LINE = re.compile(rb"x-anthropic-billing-header:[\x20\x21\x23-\x5b\x5d-\x7e]*")


def split_billing_header(system: Any) -> tuple[Any, Optional[str]]:
    """(`system` without the billing header, the header line or None when there is none).

    The header is the first line of a string `system`, or of the first block of a list: a block
    holding only the header is dropped, one with more lines keeps the lines after it.
    """
    if isinstance(system, str):
        if system.startswith(PREFIX):
            line, _, rest = system.partition("\n")
            return rest, line
        return system, None
    if not isinstance(system, list) or not system:
        return system, None
    first = system[0]
    text = first.get("text") if isinstance(first, dict) and first.get("type") == "text" else None
    if not isinstance(text, str) or not text.startswith(PREFIX):
        return system, None
    line, _, rest = text.partition("\n")
    if not rest:
        return system[1:], line
    return [{**first, "text": rest}, *system[1:]], line


@dataclass
class BillingHeaderTally:
    """How many requests carried the billing header and whether it varied, for the summaries.

    Values are only counted, never reported: they can identify the client build and the content.
    """

    requests: int = 0
    with_header: int = 0
    compared_in_lane: int = 0  # requests with a header after a request of their lane with one
    changed_in_lane: int = 0  # ... whose header differs from that request's
    _values: set[str] = field(default_factory=set)
    _last: dict[Hashable, Optional[str]] = field(default_factory=dict)

    def add(self, header: Optional[str], lane: Optional[Hashable]) -> None:
        """Count one hashed request of `lane` (a conversation's parent or one of its sub-agents;
        None when unknown, e.g. a request no JSONL log links: then it is compared with none)."""
        self.requests += 1
        previous = self._last.get(lane) if lane is not None else None
        if lane is not None:
            self._last[lane] = header
        if header is None:
            return
        self.with_header += 1
        self._values.add(header)
        if previous is not None:
            self.compared_in_lane += 1
            self.changed_in_lane += previous != header

    @property
    def distinct_values(self) -> int:
        return len(self._values)

    @property
    def varied(self) -> Optional[bool]:
        """Whether the value changed within a lane; None when no two requests of a lane carried it."""
        return self.changed_in_lane > 0 if self.compared_in_lane else None

    def as_dict(self) -> dict[str, Any]:
        return {"name": HEADER_NAME, "requests": self.with_header, "of_requests": self.requests,
                "distinct_values": self.distinct_values, "varied": self.varied,
                "changed_within_lane": self.changed_in_lane, "compared_within_lane": self.compared_in_lane,
                "handling": "dropped before hashing"}

    def describe(self) -> str:
        """One sentence for a summary, '' when no request carried the header."""
        if not self.with_header:
            return ""
        values = "1 distinct value" if self.distinct_values == 1 else f"{self.distinct_values} distinct values"
        if not self.compared_in_lane:
            variation = f"{values} (no two requests of one known lane to compare)"
        elif self.varied:
            variation = (f"{values}, it varied: a new value on {self.changed_in_lane} of {self.compared_in_lane} "
                         "requests that followed another of their lane")
        else:
            variation = f"{values}, constant within each lane"
        return (f"Billing header ({HEADER_NAME}) in {self.with_header} of {self.requests} requests, {variation}; "
                "dropped before hashing, as the API does.")
