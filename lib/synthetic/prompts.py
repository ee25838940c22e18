"""Tool definitions and system prompts of the example capture (Claude Code 2.1.83 look-alikes).

Descriptions are a real-looking lead paragraph plus generated usage notes, padded to a size in
characters times `scale`, so the parent's first prompt is ~25K API tokens at scale 1.
"""
from __future__ import annotations

import hashlib
import json
import random

from lib.synthetic.filler_text import prose
from lib.synthetic.proxy_db_writer import CLAUDE_CODE_VERSION

CWD = "/home/dev/vllm-study"
_S = {"type": "string"}
_I = {"type": "integer"}
_B = {"type": "boolean"}


def _obj(properties: dict, required: list[str]) -> dict:
    # Claude Code sends $schema/additionalProperties too; the proxy drops them (docs/inputs.md#stored-request-body).
    return {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": properties,
            "required": required, "additionalProperties": False}


def _described(kind: dict, text: str) -> dict:
    return {**kind, "description": text}


_TODO_ITEM = {"type": "object", "properties": {
    "content": _described(_S, "The imperative form of the task, e.g. 'Run tests'"),
    "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
    "activeForm": _described(_S, "The present continuous form shown while the task runs")},
    "required": ["content", "status", "activeForm"], "additionalProperties": False}
_QUESTION = {"type": "object", "properties": {
    "question": _described(_S, "The complete question to ask the user"),
    "header": _described(_S, "A very short label shown as a chip (max 12 chars)"),
    "options": {"type": "array", "minItems": 2, "maxItems": 4, "items": {"type": "object", "properties": {
        "label": _S, "description": _S}, "required": ["label", "description"], "additionalProperties": False}},
    "multiSelect": _B}, "required": ["question", "header", "options", "multiSelect"], "additionalProperties": False}

# name -> (lead paragraph, schema, description size in characters at scale 1)
TOOL_SPECS: dict[str, tuple[str, dict, int]] = {
    "Agent": ("Launch a new agent to handle complex, multi-step tasks autonomously. Available agent types: "
              "general-purpose, Explore (fast read-only codebase exploration), Plan. Launch several agents in one "
              "message to run them concurrently; each returns one final report.",
              _obj({"description": _described(_S, "A short (3-5 word) description of the task"),
                    "prompt": _described(_S, "The task for the agent to perform"),
                    "subagent_type": _described(_S, "The type of specialized agent to use"),
                    "model": {"type": "string", "enum": ["sonnet", "opus", "haiku"]},
                    "run_in_background": _B}, ["description", "prompt", "subagent_type"]), 9000),
    "Bash": ("Executes a bash command in a persistent shell session with an optional timeout. Use it for git, "
             "build, test and package-manager commands, not for reading or searching files.",
             _obj({"command": _described(_S, "The command to execute"),
                   "timeout": _described(_I, "Optional timeout in milliseconds (max 600000)"),
                   "description": _described(_S, "Clear, concise description of what this command does"),
                   "run_in_background": _B, "dangerouslyDisableSandbox": _B}, ["command"]), 7200),
    "Glob": ("Fast file pattern matching that works with any codebase size. Returns matching paths sorted by "
             "modification time.", _obj({"pattern": _described(_S, "The glob pattern to match files against"),
                                         "path": _described(_S, "The directory to search in")}, ["pattern"]), 1400),
    "Grep": ("A powerful search tool built on ripgrep. Supports full regex syntax, glob and type filters, and "
             "three output modes.", _obj({
                 "pattern": _described(_S, "The regular expression pattern to search for"),
                 "path": _S, "glob": _S, "type": _S, "-i": _B, "-n": _B, "-A": _I, "-B": _I, "-C": _I,
                 "multiline": _B, "head_limit": _I,
                 "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"]}},
                 ["pattern"]), 2600),
    "ExitPlanMode": ("Use this tool when you are in plan mode and have finished presenting your plan.",
                     _obj({"plan": _described(_S, "The plan to run by the user")}, ["plan"]), 2200),
    "Read": ("Reads a file from the local filesystem. Results are returned using cat -n format, with line "
             "numbers starting at 1.", _obj({"file_path": _described(_S, "The absolute path to the file to read"),
                                             "offset": _I, "limit": _I}, ["file_path"]), 2400),
    "Edit": ("Performs exact string replacements in files. You must read the file before editing it.",
             _obj({"file_path": _S, "old_string": _S, "new_string": _S, "replace_all": _B},
                  ["file_path", "old_string", "new_string"]), 2600),
    "Write": ("Writes a file to the local filesystem, overwriting any existing file at that path.",
              _obj({"file_path": _described(_S, "The absolute path to the file to write"),
                    "content": _described(_S, "The content to write to the file")}, ["file_path", "content"]), 1800),
    "NotebookEdit": ("Completely replaces the contents of a specific cell in a Jupyter notebook.",
                     _obj({"notebook_path": _S, "cell_id": _S, "new_source": _S,
                           "cell_type": {"type": "string", "enum": ["code", "markdown"]},
                           "edit_mode": {"type": "string", "enum": ["replace", "insert", "delete"]}},
                          ["notebook_path", "new_source"]), 1500),
    "WebFetch": ("Fetches content from a URL and processes it with a prompt using a small, fast model.",
                 _obj({"url": {"type": "string", "format": "uri"}, "prompt": _S}, ["url", "prompt"]), 2000),
    "TodoWrite": ("Use this tool to create and manage a structured task list for your current coding session.",
                  _obj({"todos": {"type": "array", "items": _TODO_ITEM}}, ["todos"]), 9500),
    "WebSearch": ("Allows Claude to search the web and use the results to inform responses.",
                  _obj({"query": {"type": "string", "minLength": 2}, "allowed_domains": {"type": "array", "items": _S},
                        "blocked_domains": {"type": "array", "items": _S}}, ["query"]), 1500),
    "BashOutput": ("Retrieves output from a running or completed background bash shell.",
                   _obj({"bash_id": _S, "filter": _S}, ["bash_id"]), 700),
    "KillShell": ("Kills a running background bash shell by its ID.", _obj({"shell_id": _S}, ["shell_id"]), 500),
    "Skill": ("Execute a skill within the main conversation. Skills provide specialized capabilities.",
              _obj({"skill": _described(_S, "The skill name")}, ["skill"]), 2100),
    "AskUserQuestion": ("Use this tool when you need to ask the user questions during execution.",
                        _obj({"questions": {"type": "array", "minItems": 1, "maxItems": 4, "items": _QUESTION}},
                             ["questions"]), 2300),
}
PARENT_TOOLS = ("Agent", "Bash", "Glob", "Grep", "ExitPlanMode", "Read", "Edit", "Write", "NotebookEdit",
                "WebFetch", "TodoWrite", "WebSearch", "BashOutput", "KillShell", "Skill", "AskUserQuestion")
# Calibrates the per-tool sizes above to ~15K API tokens for the parent's 16 tools, ~10K for Explore's 11.
TOOL_SIZE_FACTOR = 1.13
EXPLORE_TOOLS = ("Bash", "Glob", "Grep", "Read", "WebFetch", "TodoWrite", "WebSearch", "BashOutput",
                 "KillShell", "Skill", "AskUserQuestion")


def tool_definitions(names: tuple[str, ...], scale: float, seed: int) -> list[dict]:
    """Client-side tool definitions (with the extras the proxy later drops)."""
    tools = []
    for name in names:
        lead, schema, size = TOOL_SPECS[name]
        # Seeded per tool name, so a tool's text is identical in the parent's and the sub-agents' lists.
        rng = random.Random(f"{seed}:tool:{name}")
        notes = prose(rng, max(0, int(size * TOOL_SIZE_FACTOR * scale) - len(lead)))
        tools.append({"name": name, "description": f"{lead}\n\nUsage notes:\n{notes}", "input_schema": schema})
    return tools


def billing_block(tag: str) -> dict:
    """Claude Code's first system block (constant within one conversation)."""
    return {"type": "text",
            "text": f"x-anthropic-billing-header: cc_version={CLAUDE_CODE_VERSION}.{tag[:3]}; cc_entrypoint=cli; cch={tag[3:8]};"}


def with_per_request_billing(body: dict) -> dict:
    """`body` with its billing block's version suffix and `cch` derived from the body, as many
    Claude Code versions send them: a new value on almost every request."""
    system = body.get("system")
    if not system or not system[0].get("text", "").startswith("x-anthropic-billing-header:"):
        return body
    tag = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return {**body, "system": [billing_block(tag), *system[1:]]}


def with_billing_version(body: dict, version: str) -> dict:
    """`body` with its billing block naming Claude Code `version` (suffix and `cch` kept)."""
    system = body.get("system")
    if not system or not system[0].get("text", "").startswith("x-anthropic-billing-header:"):
        return body
    text = system[0]["text"].replace(f"cc_version={CLAUDE_CODE_VERSION}.", f"cc_version={version}.", 1)
    return {**body, "system": [{**system[0], "text": text}, *system[1:]]}


IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."


def parent_system(scale: float, seed: int) -> list[dict]:
    """The main thread's system blocks: billing header, identity (cached), main prompt + env (cached)."""
    rng = random.Random(f"{seed}:system:parent")
    body = ("You are an interactive CLI tool that helps users with software engineering tasks. Use the "
            "instructions below and the tools available to you to assist the user.\n\n# Tone and style\n"
            + prose(rng, int(26200 * scale)) +
            f"\n\n<env>\nWorking directory: {CWD}\nIs directory a git repo: Yes\nPlatform: linux\n"
            "OS Version: Linux 6.8.0-52-generic\nToday's date: 2026-03-25\n</env>\n"
            "You are powered by the model named Opus 4.6. The exact model ID is claude-opus-4-6.")
    return [billing_block("00c4e1f7"),
            {"type": "text", "text": IDENTITY, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            {"type": "text", "text": body, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]


def explore_system(scale: float, seed: int) -> list[dict]:
    """The Explore sub-agents' system blocks (shared by all four)."""
    rng = random.Random(f"{seed}:system:explore")
    body = ("You are a file search specialist for Claude Code. You excel at thoroughly navigating and "
            "exploring codebases.\n\nGuidelines:\n" + prose(rng, int(13000 * scale)) +
            f"\n\n<env>\nWorking directory: {CWD}\nPlatform: linux\nToday's date: 2026-03-25\n</env>")
    return [billing_block("b49a6337"),
            {"type": "text", "text": IDENTITY, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": body, "cache_control": {"type": "ephemeral"}}]


def claude_md_reminder(scale: float, seed: int) -> str:
    """The system-reminder Claude Code prepends to the first prompt (CLAUDE.md, skills)."""
    rng = random.Random(f"{seed}:reminder")
    return ("<system-reminder>\nAs you answer the user's questions, you can use the following context:\n"
            "# claudeMd\nCodebase and user instructions are shown below.\n\nContents of "
            f"{CWD}/CLAUDE.md (project instructions, checked into the codebase):\n\n# vllm-study\n"
            + prose(rng, int(17600 * scale)) +
            "\n\nIMPORTANT: this context may or may not be relevant to your tasks.\n</system-reminder>")
