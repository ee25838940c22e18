"""Counting bad input: every skipped or degraded item is counted under a named reason (docs/reliability.md#bad-input)."""
from __future__ import annotations

from collections import Counter

MAX_EXAMPLES = 3


class ProblemCounter:
    """Counts data problems by reason and keeps the first few examples of each.

    >>> problems = ProblemCounter()
    >>> problems.add("broken_jsonl_line", "a.jsonl:12")
    >>> problems.as_dict()
    {'broken_jsonl_line': {'count': 1, 'examples': ['a.jsonl:12']}}
    """

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._examples: dict[str, list[str]] = {}

    def add(self, reason: str, example: str = "", count: int = 1) -> None:
        self._counts[reason] += count
        examples = self._examples.setdefault(reason, [])
        if example and len(examples) < MAX_EXAMPLES:
            examples.append(example)

    def merge(self, other: "ProblemCounter") -> None:
        for reason, count in other._counts.items():
            self._counts[reason] += count
            examples = self._examples.setdefault(reason, [])
            for example in other._examples.get(reason, []):
                if len(examples) < MAX_EXAMPLES:
                    examples.append(example)

    def count(self, reason: str) -> int:
        return self._counts[reason]

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def as_dict(self) -> dict[str, dict]:
        return {
            reason: {"count": self._counts[reason], "examples": list(self._examples.get(reason, []))}
            for reason in sorted(self._counts)
        }

    def describe(self) -> str:
        """One human line: `reason ×n (e.g. example), …` or an empty string."""
        parts = []
        for reason in sorted(self._counts):
            examples = self._examples.get(reason)
            hint = f" (e.g. {examples[0]})" if examples else ""
            parts.append(f"{reason} ×{self._counts[reason]}{hint}")
        return "; ".join(parts)
