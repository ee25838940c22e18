"""Running the five scripts from the reliability tests: in-process (CliRunner) or as subprocesses.

The validator and the visualizer are optional here: their parametrizations skip while the
script files are absent, so the suites run on any checkout.
"""
from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from click.testing import CliRunner, Result

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SALT = "reliability-suite"


@dataclass(frozen=True)
class Workspace:
    """Where one run of the pipeline reads and writes."""

    db: Path
    jsonl: Path
    out: Path

    @property
    def traces(self) -> Path:
        return self.out / "traces"

    @property
    def html(self) -> Path:
        return self.out / "combined.html"


@dataclass(frozen=True)
class Tool:
    """One script: its module name and how the suites call it on a workspace."""

    name: str
    module: str
    arguments: Callable[[Workspace], list[str]]

    @property
    def script(self) -> Path:
        return ROOT / f"{self.module}.py"

    @property
    def is_present(self) -> bool:
        return self.script.is_file()

    def command(self, workspace: Workspace) -> list[str]:
        """The subprocess command line."""
        return [PYTHON, str(self.script), *self.arguments(workspace)]


TOOLS = (
    Tool("message_index", "build_message_index", lambda w: [str(w.db), "--json"]),
    Tool("conversation_index", "build_conversation_index", lambda w: [str(w.db), "--projects-path", str(w.jsonl), "--json"]),
    Tool("traces", "build_minimal_traces", lambda w: [
        str(w.db), "--jsonl-dir", str(w.jsonl), "--output-dir", str(w.traces), "--include-subagents",
        "--format", "both", "--salt", SALT, "--json"]),
    Tool("validator", "validate_trace_cache", lambda w: [str(w.traces), "--db", str(w.db), "--jsonl-dir", str(w.jsonl), "--json"]),
    Tool("visualizer", "complete_cache_visualizer", lambda w: [
        str(w.db), "--conversation-id", "combined", "--output", str(w.html), "--json"]),
)
TOOL_BY_NAME = {tool.name: tool for tool in TOOLS}


def tool_params() -> list[Any]:
    """`pytest.param` per tool, marked skip while its script does not exist yet."""
    return [pytest.param(tool, id=tool.name, marks=() if tool.is_present else
                         pytest.mark.skip(reason=f"{tool.script.name} is not on main yet")) for tool in TOOLS]


@dataclass(frozen=True)
class ToolRun:
    """Exit code, output and the parsed --json summary (None when stdout is not JSON)."""

    exit_code: int
    stdout: str
    stderr: str
    summary: Optional[dict[str, Any]]
    exception: Optional[BaseException]

    @property
    def problems(self) -> dict[str, dict[str, Any]]:
        """The summary's `problems` map (reason → {count, examples}), merged over the validator's
        `versus_api` and the visualizer's `reports` when the summary keeps them there; {} when absent."""
        summary = self.summary or {}
        if isinstance(summary.get("problems"), dict):
            return summary["problems"]
        merged: dict[str, dict[str, Any]] = {}
        for part in [summary.get("versus_api") or {}, *(summary.get("reports") or [])]:
            for reason, detail in (part.get("problems") or {}).items():
                entry = merged.setdefault(reason, {"count": 0, "examples": []})
                entry["count"] += detail["count"]
                entry["examples"] += detail["examples"]
        return merged

    def describe(self) -> str:
        """For assertion messages: the exit code, stderr and the exception."""
        return f"exit {self.exit_code}; stderr: {self.stderr.strip()[-2000:]!r}; exception: {self.exception!r}"


def run_tool(tool: Tool, workspace: Workspace, *extra: str) -> ToolRun:
    """Run one script in-process with CliRunner (no interpreter start-up per call)."""
    module = importlib.import_module(tool.module)
    result: Result = CliRunner().invoke(module.main, [*tool.arguments(workspace), *extra], catch_exceptions=True)
    exception = result.exception if not isinstance(result.exception, SystemExit) else None
    return ToolRun(result.exit_code, result.stdout, result.stderr, _parse_json(result.stdout), exception)


def _parse_json(text: str) -> Optional[dict[str, Any]]:
    """The --json summary; None when stdout holds anything but one JSON object (docs/cli.md#summaries: JSON only)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
