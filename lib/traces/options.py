"""What a build_minimal_traces run is asked to do (`TraceOptions`) and what it did (`TraceSummary`).

Shared by the run (lib/traces/build.py) and the writer (lib/traces/writer.py), which fills the summary.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional

from lib.capture.db_conversations import ROUTE_DB_JSONL, ROUTE_DB_ONLY, ROUTE_JSONL_ONLY
from lib.cli import counted
from lib.capture.billing_header import BillingHeaderTally
from lib.hashing.block_hashes import DEFAULT_BLOCK_SIZE
from lib.problems import ProblemCounter
from lib.traces.plan import PlanOptions



def route_key(route: str) -> str:
    """A route as a snake_case key of --json and the manifest (`DB+JSONL` → `db_jsonl`)."""
    return route.lower().replace("+", "_").replace("-", "_")


@dataclass(frozen=True)
class TraceOptions:
    """Every option of build_minimal_traces.py that shapes the output."""

    plan: PlanOptions = field(default_factory=PlanOptions)
    block_size: int = DEFAULT_BLOCK_SIZE
    hash_id_scope: str = "local"
    salt: Optional[str] = None
    formats: tuple[str, ...] = ("kv",)
    mooncake_block_size: int = 512
    mooncake_sessions: bool = False
    workers: int = 1
    token_count: str = "tokenizer"
    tokenizer: str = "cl100k_base"
    # "spawn": sub-agent `t` from its first request, parent `t` from 0 (docs/traces.md);
    # "aiperf": the parent's `t` start past every sub-agent's last `t`, so AIPerf 0.13 reads them relative too.
    subagent_clock: str = "spawn"

    def for_manifest(self) -> dict[str, Any]:
        """The options as recorded in manifest.json: never the salt, no ids when anonymized."""
        plan = asdict(self.plan)
        plan["since"] = self.plan.since.isoformat() if self.plan.since and not self.plan.anonymize else None
        plan["until"] = self.plan.until.isoformat() if self.plan.until and not self.plan.anonymize else None
        if self.plan.anonymize:
            plan["conversation_id"] = None
        options = asdict(self)
        options["plan"] = plan
        options["salt"] = "given" if self.salt is not None else "random"
        options["formats"] = list(self.formats)
        # Worker count changes speed, never output: leaving it out keeps runs byte-identical.
        del options["workers"]
        return options


@dataclass
class TraceSummary:
    """What a run wrote and skipped."""

    output_dir: str
    traces_written: int = 0
    requests_written: int = 0
    subagents_written: int = 0
    subagent_requests_written: int = 0
    conversations: int = 0
    dropped_min_requests: int = 0
    mooncake_rows: int = 0
    files: list[str] = field(default_factory=list)
    stale_removed: int = 0
    tokens_requested: int = 0
    tokens_tokenized: int = 0
    tokenizer_to_api_ratio: dict[str, float] = field(default_factory=dict)
    problems: ProblemCounter = field(default_factory=ProblemCounter)
    billing_header: BillingHeaderTally = field(default_factory=BillingHeaderTally)
    elapsed_s: float = 0.0
    route: str = ROUTE_DB_JSONL  # or JSONL-only / DB-only (docs/routes.md)
    db_route: dict[str, int] = field(default_factory=dict)  # what the DB-only reading found
    route_of: dict[str, str] = field(default_factory=dict)  # conversation id → its route
    conversations_by_route: dict[str, int] = field(default_factory=dict)  # of the conversations written

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["route_of"]  # conversation ids: the summary names none under --anonymize
        data["conversations_by_route"] = {route_key(route): count for route, count in self.conversations_by_route.items()}
        data["problems"] = self.problems.as_dict()
        data["billing_header"] = self.billing_header.as_dict()
        data["memo_ratio"] = round(self.tokens_tokenized / self.tokens_requested, 4) if self.tokens_requested else 0.0
        return data

    @property
    def requests_from_db(self) -> bool:
        """The requests are proxy rows (bodies, timing), not rebuilt from the logs."""
        return self.route != ROUTE_JSONL_ONLY

    def describe(self) -> str:
        memo = self.tokens_tokenized / self.tokens_requested if self.tokens_requested else 0.0
        source = {ROUTE_DB_JSONL: "with DB requests", ROUTE_JSONL_ONLY: "from the logs",
                  ROUTE_DB_ONLY: "rebuilt from the DB alone"}[self.route]
        tokenized = (f" Tokenized {self.tokens_tokenized:,} of {self.tokens_requested:,} prompt tokens ({memo:.1%})."
                     if self.requests_from_db else "")
        text = (
            f"Wrote {self.traces_written} trace(s) to {self.output_dir}: {self.requests_written} parent requests, "
            f"{self.subagents_written} sub-agents with {self.subagent_requests_written} requests"
            f"{f', {self.mooncake_rows} Mooncake rows' if self.mooncake_rows else ''}. "
            f"{self.conversations} conversation(s) {source}; dropped {self.dropped_min_requests} "
            f"under --min-requests.{tokenized} {self.elapsed_s:.2f} s."
        )
        ratios = ", ".join(f"{family} {ratio:.2f}" for family, ratio in sorted(self.tokenizer_to_api_ratio.items()))
        if ratios:
            text += f" Tokenizer/API token ratio: {ratios}."
        text += " " + self.route_note()
        if self.billing_header.with_header:
            text += " " + self.billing_header.describe()
        if self.problems:
            text += f" Skipped or degraded: {self.problems.describe()}."
        return text

    def count_routes(self, conversation_ids: Iterable[str]) -> None:
        """Conversations written per route; a run with no logged conversation is a DB-only run."""
        counts: dict[str, int] = {}
        for conversation_id in conversation_ids:
            route = self.route_of.get(conversation_id, self.route)
            counts[route] = counts.get(route, 0) + 1
        self.conversations_by_route = counts
        if self.route == ROUTE_DB_JSONL and counts and ROUTE_DB_JSONL not in counts:
            self.route = ROUTE_DB_ONLY

    def route_note(self) -> str:
        """Which route each conversation took and what that route cannot know (docs/routes.md)."""
        if self.route == ROUTE_JSONL_ONLY:
            return ("Route JSONL-only: `in` is the API prompt size from the logs' usage; the tools + system"
                    " prefix the logs do not show is one block chain per agent kind and model family;"
                    " api_time and ttft are absent (the logs do not record them).")
        by_route = ", ".join(f"{route} {count}" for route, count in sorted(self.conversations_by_route.items()))
        text = f"Conversations by route: {by_route or 'none'}."
        if self.conversations_by_route.get(ROUTE_DB_ONLY):
            found = self.db_route
            by = ", ".join(f"{count} by {how}" for how, count in (
                ("header", found.get("subagents_by_header", 0)), ("Agent-call prompt", found.get("subagents_by_prompt", 0)),
                ("spawn window", found.get("subagents_by_window", 0))) if count)
            text += (f" DB-only: {counted(found.get('turn_rows', 0), 'turn row')} in"
                     f" {counted(found.get('chains', 0), 'prompt chain')} ({found.get('session_headers', 0)} with a"
                     f" session header, {counted(found.get('continuations', 0), 'compaction continuation')} joined);"
                     f" sub-agents {by or 'none'}; {counted(found.get('not_turn_rows', 0), 'row')} without tools"
                     " (probes, titles) left out. Conversation and agent ids are headers' or `db-<row id>` where none"
                     " names them; markers' `t` is the end of the row that called the agent.")
        return text
