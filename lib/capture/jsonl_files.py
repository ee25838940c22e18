"""Finding Claude Code JSONL logs and streaming their lines (docs/inputs.md#where-logs-are-found).

Parents live at `<project>/<sessionId>.jsonl`; sub-agents at `<sessionId>/subagents/agent-<agentId>.jsonl`
(newer, with an optional `agent-<agentId>.meta.json` beside it) or `agent-<agentId>.jsonl` beside the
parent (older). A live session may be mid-write, so a cut-off last line is counted, not fatal
(docs/reliability.md#bad-input).
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import orjson

from lib.errors import InputError
from lib.problems import ProblemCounter

SUBAGENT_FILE = re.compile(r"^agent-(?P<agent_id>.+)\.jsonl$")
# Claude Code names a parent log after its session id; other tools store logs as e.g. `<hash>/full.jsonl`.
SESSION_FILE_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
SESSION_PEEK_LINES = 50
# Longer lines are skipped unread (`jsonl_line_too_long`): far above any real entry (a base64 image
# reaches tens of MB), low enough that a runaway file cannot take all memory.
MAX_LINE_BYTES = 256 << 20
_READ_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class LogFile:
    """One JSONL file (a parent session log, or a sub-agent log when `agent_id` is set) and its stat."""

    path: Path
    conversation_id: str
    agent_id: str
    size: int
    mtime_ns: int
    relative_path: str = ""  # from the logs folder given, so problem examples are unambiguous

    @property
    def is_subagent(self) -> bool:
        """True for `agent-<agentId>.jsonl` files."""
        return bool(self.agent_id)

    @property
    def label(self) -> str:
        """The file as problem examples name it: its path relative to the logs folder."""
        return self.relative_path or self.path.name

    @property
    def meta_path(self) -> Path:
        """Where Claude Code writes this sub-agent's `agent-<agentId>.meta.json` (agent type etc.)."""
        return self.path.with_name(self.path.name.removesuffix(".jsonl") + ".meta.json")


@dataclass(frozen=True)
class AgentMeta:
    """A sub-agent's `.meta.json`: what Claude Code resolved at spawn (docs/inputs.md#where-logs-are-found)."""

    agent_type: str
    description: str
    tool_use_id: str


def default_projects_dir() -> Path:
    """`$CLAUDE_CONFIG_DIR/projects`, else `~/.claude/projects` (where Claude Code writes its logs)."""
    base = os.environ.get("CLAUDE_CONFIG_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".claude") / "projects"


def discover_logs(path: Optional[str | Path] = None, problems: Optional[ProblemCounter] = None) -> list[LogFile]:
    """Find parent and sub-agent logs under a directory (recursively), beside a single file, or in the default place."""
    problems = problems if problems is not None else ProblemCounter()
    root = (Path(path).expanduser() if path else default_projects_dir()).resolve()
    if root.is_file():
        candidates = [root, *_companion_files(root)]
    elif root.is_dir():
        candidates = sorted(p for p in _walk_files(root, problems) if p.suffix == ".jsonl" and not p.name.startswith("."))
    else:
        raise InputError(f"{root}: no such file or directory")
    base = root.parent if root.is_file() else root
    logs = [log for candidate in candidates if (log := _describe_file(candidate, base, problems)) is not None]
    if root.is_file() and logs and not logs[0].is_subagent:
        # A single parent file brings only its own sub-agents, not other sessions' agent files beside it.
        logs = [log for log in logs if log.conversation_id == logs[0].conversation_id]
    return logs


def _walk_files(root: Path, problems: ProblemCounter) -> Iterator[Path]:
    """Every file under `root` (directory links not followed, as `rglob` did); a directory that cannot
    be listed is counted (`unreadable_directory`), where a glob would skip its logs without a word."""

    def unreadable(error: OSError) -> None:
        problems.add("unreadable_directory", f"{error.filename}: {error.strerror}")

    for directory, _, files in os.walk(root, onerror=unreadable):
        yield from (Path(directory) / name for name in files)


def group_logs(logs: Iterable[LogFile]) -> dict[str, list[LogFile]]:
    """Group files by conversation id (the parent's sessionId), parent files first, then by path."""
    groups: dict[str, list[LogFile]] = {}
    for log in logs:
        groups.setdefault(log.conversation_id, []).append(log)
    return {cid: sorted(files, key=lambda log: (log.is_subagent, str(log.path))) for cid, files in sorted(groups.items())}


def iter_entries(path: Path, problems: ProblemCounter,
                 label: Optional[str] = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream (line number, entry) for each line holding a JSON object; count broken or truncated lines
    (examples name the file by `label`, default its base name)."""
    label = label or path.name
    with path.open("rb") as stream:
        for number, raw in enumerate(_capped_lines(stream), start=1):
            if raw is None:
                problems.add("jsonl_line_too_long", f"{label}:{number}")
                continue
            if not raw.strip():
                continue
            entry = _loads(raw)
            if entry is None:
                entry = _loads_repaired(raw)
                if entry is not None:
                    problems.add("invalid_utf8_jsonl_line", f"{label}:{number}")
                    yield number, entry
                    continue
                # A last line without newline is a write in progress, not corruption (docs/inputs.md#entries).
                reason = "unparsable_jsonl_line" if raw.endswith(b"\n") else "truncated_jsonl_line"
                problems.add(reason, f"{label}:{number}")
                continue
            yield number, entry


def _capped_lines(stream: Any) -> Iterator[Optional[bytes]]:
    """Each line of a binary stream, or None for a line over MAX_LINE_BYTES (skipped without keeping it)."""
    limit = MAX_LINE_BYTES
    while True:
        raw = stream.readline(limit + 1)
        if not raw:
            return
        if len(raw) <= limit:
            yield raw
            continue
        while not raw.endswith(b"\n"):  # discard the rest of the long line
            raw = stream.readline(_READ_CHUNK_BYTES)
            if not raw:
                break
        yield None


def _companion_files(parent: Path) -> list[Path]:
    """Sub-agent files of a single parent file: `<stem>/subagents/` (newer) and `agent-*` beside it (older)."""
    if SUBAGENT_FILE.match(parent.name):
        return []
    newer = sorted((parent.parent / parent.stem / "subagents").glob("agent-*.jsonl"))
    older = sorted(parent.parent.glob("agent-*.jsonl"))
    return newer + older


def read_agent_meta(log: LogFile, problems: ProblemCounter) -> Optional[AgentMeta]:
    """The sub-agent's `.meta.json` when Claude Code wrote one (newer versions); a broken one is counted."""
    try:
        raw = log.meta_path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        problems.add("unreadable_agent_meta", f"{log.label}: {error.strerror}")
        return None
    value = _loads(raw)
    if value is None:
        problems.add("unparsable_agent_meta", log.label)
        return None
    return AgentMeta(*(found if isinstance(found := value.get(key), str) else ""
                       for key in ("agentType", "description", "toolUseId")))


def _describe_file(path: Path, base: Path, problems: ProblemCounter) -> Optional[LogFile]:
    relative = _relative(path, base)
    try:
        status = path.stat()
    except OSError as error:
        problems.add("unreadable_jsonl_file", f"{relative}: {error.strerror}")
        return None
    if not stat.S_ISREG(status.st_mode):
        # A FIFO would block the scan forever, a link to /dev/zero would grow without end.
        problems.add("jsonl_not_a_regular_file", relative)
        return None
    match = SUBAGENT_FILE.match(path.name)
    session = _peek_session_id(path)
    if match is None:
        # The lines' sessionId names the conversation, except in a file Claude Code named after its
        # session: a resumed session's file starts with lines copied under the earlier session's id.
        conversation = path.stem if session is None or SESSION_FILE_NAME.match(path.stem) else session
        return LogFile(path, conversation, "", status.st_size, status.st_mtime_ns, relative)
    if session is None and path.parent.name == "subagents":
        session = path.parent.parent.name
    if session is None:
        problems.add("subagent_log_without_session", relative)
        return None
    return LogFile(path, session, match.group("agent_id"), status.st_size, status.st_mtime_ns, relative)


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.name


def _peek_session_id(path: Path) -> Optional[str]:
    try:
        with path.open("rb") as stream:
            for _, raw in zip(range(SESSION_PEEK_LINES), _capped_lines(stream)):
                entry = _loads(raw) if raw is not None else None
                session = entry.get("sessionId") if entry is not None else None
                if isinstance(session, str) and session:
                    return session
    except OSError:
        return None
    return None


def _loads_repaired(raw: bytes) -> Optional[dict[str, Any]]:
    """A line broken only by invalid UTF-8 bytes, parsed with them as U+FFFD; None for any other breakage.

    Claude Code writes valid UTF-8, so such a byte is corruption inside a string: losing the whole
    line would lose its turn, while the replacement changes one character of content.
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return _loads(raw.decode("utf-8", "replace").encode("utf-8"))
    return None


def _loads(raw: bytes) -> Optional[dict[str, Any]]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
