"""The example capture's story: the seed walkthrough's vLLM analysis session (seed/EXAMPLE_CONVERSATION.txt).

An opus parent clones vLLM, launches 4 concurrent Explore sub-agents (haiku) in one message,
writes a Markdown report from their results, and after a ~315 s pause answers a follow-up.
`build_scenario` returns every lane with its planned calls, timing and simulated usage.

With `background_agents` the 4 agents are launched in the background (`run_in_background`): the
parent gets launch acknowledgements at once, works on and waits, and each agent's end reaches it
as a `<task-notification>` in a later prompt (docs/inputs.md#sub-agents).
"""
from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from lib.synthetic.jsonl_writer import agent_tool_result, async_launch_result, new_uuid, task_notification
from lib.synthetic.proxy_db_writer import BETA_MAIN, BETA_SUBAGENT, BETA_UTILITY
from lib.synthetic.lanes import HAIKU, OPUS, SONNET, IdSource, Lane, simulate_usage
from lib.synthetic.prompts import (CWD, EXPLORE_TOOLS, PARENT_TOOLS, claude_md_reminder, explore_system,
                              parent_system, tool_definitions)
from lib.synthetic.filler_text import markdown_report, numbered, prose, python_module
from lib.synthetic.usage import TTL_1H_S, TTL_5M_S, PromptCacheSim, TokenMeter

START = datetime(2026, 3, 25, 19, 42, 9, tzinfo=timezone.utc)  # 15:42:09 at the proxy's -04:00
PROMPT = ("Can you clone a version of vllm locally and then fully analyze its full code path and write me a "
          "markdown file about key components.")
FOLLOW_UP = "Rewrite this in pirate speak."
USER_PAUSE_S = 315.0
# The model-switch variant: the user types `/model sonnet`, then asks once more after reading.
SWITCH_PROMPT = "Now give me the three most important components as a bulleted list."
SWITCH_PAUSE_S = 40.0
QUOTA_LEAD_S = 262.0  # Claude Code probes the quota at start-up, minutes before the first prompt
# Characters per API token of generated text: the first guess for sizing, refined as files are measured.
CHARS_PER_TOKEN = 3.0
# Background agents: from an agent's last answer to its notification in the parent's queue, and from a
# delivered notification to the request it is sent in.
NOTIFY_DELAY_S = 0.4
DELIVERY_TO_REQUEST_S = 0.08
TASKS_DIR = "/tmp/claude-1000/-home-dev-vllm-study/tasks"


@dataclass(frozen=True)
class AgentSpec:
    """One Explore sub-agent: its task, the files it reads, its call count and prompt growth (API tokens)."""

    description: str
    focus: str
    files: tuple[str, ...]
    calls: int
    final_tokens: int
    report_tokens: int


AGENTS = (
    AgentSpec("Explore engine entrypoints", "the LLM entrypoint, LLMEngine and argument handling",
              ("vllm/entrypoints/llm.py", "vllm/engine/llm_engine.py", "vllm/engine/arg_utils.py",
               "vllm/config.py", "vllm/outputs.py", "vllm/sequence.py", "vllm/engine/output_processor/single_step.py",
               "vllm/inputs/preprocess.py", "vllm/transformers_utils/tokenizer.py"), 21, 73_000, 2_550),
    AgentSpec("Explore scheduler and KV cache", "the scheduler, block manager and prefix caching",
              ("vllm/core/scheduler.py", "vllm/core/block_manager.py", "vllm/core/block/block_table.py",
               "vllm/core/block/prefix_caching_block.py", "vllm/core/evictor.py", "vllm/core/interfaces.py"),
              14, 89_000, 2_700),
    AgentSpec("Explore model execution", "workers, the model runner and model definitions",
              ("vllm/worker/worker.py", "vllm/worker/model_runner.py", "vllm/worker/cache_engine.py",
               "vllm/executor/gpu_executor.py", "vllm/model_executor/models/llama.py",
               "vllm/model_executor/model_loader/loader.py", "vllm/distributed/parallel_state.py",
               "vllm/worker/worker_base.py"), 26, 83_000, 7_500),
    AgentSpec("Explore attention and sampling", "attention backends, paged attention and the sampler",
              ("vllm/attention/backends/flash_attn.py", "vllm/attention/ops/paged_attn.py",
               "vllm/attention/selector.py", "vllm/model_executor/layers/sampler.py",
               "vllm/model_executor/sampling_metadata.py", "vllm/model_executor/layers/logits_processor.py",
               "vllm/attention/layer.py"), 23, 73_000, 7_750),
)


@dataclass
class Scenario:
    """Every lane of the capture, its session ids, and the parent's agent links."""

    session_id: str
    parent: Lane
    agents: list[tuple[Lane, str, dict]]  # (lane, agent id, the Agent tool_use block)
    utility: list[Lane]
    background_agents: bool = False

    @property
    def lanes(self) -> list[Lane]:
        """All lanes, parent first."""
        return [self.parent] + [lane for lane, _, _ in self.agents] + self.utility


class _Story:
    """Shared state while the scenario is written: seeded streams, scale, meter, cache."""

    def __init__(self, seed: int, scale: float, meter: TokenMeter, old_proxy: bool,
                 api_cache_ttl_s: Optional[float] = None) -> None:
        self.seed, self.scale, self.meter, self.old_proxy = seed, scale, meter, old_proxy
        self.api_cache_ttl_s = api_cache_ttl_s  # one TTL for every lane instead of Claude Code's 1 h / 5 m
        self.text = random.Random(f"{seed}:text")
        self.timing = random.Random(f"{seed}:timing")
        self.ids = IdSource(random.Random(f"{seed}:ids"))
        self.cache = PromptCacheSim()
        self.spawn_s = 0.0

    def lane(self, name: str, model: str, clock_s: float, **options: Any) -> Lane:
        if self.api_cache_ttl_s:
            options["ttl_s"] = self.api_cache_ttl_s
        return Lane(name=name, model=model, meter=self.meter, timing=self.timing, ids=self.ids, clock_s=clock_s,
                    old_proxy=self.old_proxy, **options)

    def thinking(self, lead: str, chars: int) -> dict:
        signature = base64.b64encode(self.text.randbytes(self.text.randint(260, 420))).decode()
        return {"type": "thinking", "thinking": f"{lead} {prose(self.text, int(chars * self.scale))}".strip(),
                "signature": signature}

    def sized(self, tokens: int) -> int:
        return max(120, int(tokens * self.scale * CHARS_PER_TOKEN))


def build_scenario(seed: int, scale: float, meter: TokenMeter, *, old_proxy: bool,
                   model_switch: bool = False, api_cache_ttl_s: Optional[float] = None,
                   background_agents: bool = False) -> Scenario:
    """Plan every call of the capture with timing and usage (deterministic for a seed).

    `model_switch`: after the pirate answer the parent switches to Sonnet for one more turn (whose
    prompt no cache holds for that model), an option so the shipped example stays as it is.
    `api_cache_ttl_s` gives the simulated API cache one TTL for every lane (a known eviction time
    for the fit of docs/cache-models.md#effective-eviction-time); the request bodies are unchanged.
    `background_agents` launches the agents in the background (see the module doc); the agents' own
    calls have the default story's content, a little later (the longer Agent calls end later).
    """
    story = _Story(seed, scale, meter, old_proxy, api_cache_ttl_s)
    t0 = START.timestamp()
    session_id = new_uuid(story.text)
    extras = {"metadata": {"user_id": f"user_{random.Random(seed).getrandbits(256):064x}_account__session_{session_id}"}}
    quota = story.lane("quota", HAIKU, t0 - QUOTA_LEAD_S, beta=BETA_UTILITY, max_tokens=1, streams=False,
                       client_extras=extras)
    quota.add_message("user", "quota")
    quota.send([{"type": "text", "text": "#"}], "max_tokens", think_s=0.0)
    tools, system = tool_definitions(PARENT_TOOLS, scale, seed), parent_system(scale, seed)
    parent = story.lane("parent", OPUS, t0, tools=tools,
                        system=system, ttl_s=TTL_1H_S, beta=BETA_MAIN,
                        message_cache_control={"type": "ephemeral", "ttl": "1h"},
                        client_extras={**extras, "thinking": {"type": "adaptive"},
                                       "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}})
    title = story.lane("title", HAIKU, t0 - 0.6, system=[system[0], {"type": "text", "text": system[1]["text"]},
                       {"type": "text", "text": "Decide whether the user's latest message starts a new conversation "
                        "topic. Reply with a JSON object with the fields 'isNewTopic' and 'title'."}],
                       beta=BETA_UTILITY, max_tokens=512, temperature=0, client_extras=extras)
    title.add_message("user", [{"type": "text", "text": PROMPT}])
    title.send([{"type": "text", "text": '{"isNewTopic": true, "title": "Analyze vLLM Code Path"}'}], "end_turn", think_s=0.0)
    # Tools + system are warm from the user's other sessions (the seed's first request is ~84 % cached).
    system_end = len(tools) + len(system)
    warm_ttl_s = api_cache_ttl_s or TTL_1H_S
    story.cache.warm(OPUS, parent.layout.keys[system_end], t0 - min(600.0, warm_ttl_s / 2), warm_ttl_s)
    spawn = _parent_until_agents(story, parent, background_agents)
    story.spawn_s = parent.clock_s + 0.1
    if story.spawn_s % 1 > 0.79:
        story.spawn_s = float(int(story.spawn_s) + 1) + 0.01
    agents = [_explore_agent(story, spec, spawn, session_id) for spec in AGENTS]
    simulate_usage([call for lane in [quota, title, parent] + [lane for lane, _, _ in agents] for call in lane.calls],
                   story.cache)
    resumed_from = len(parent.calls)
    if background_agents:
        _parent_beside_background_agents(story, parent, agents)
    else:
        _parent_after_agents(story, parent, agents)
    if model_switch:
        _switch_model(story, parent)
    simulate_usage(parent.calls[resumed_from:], story.cache)
    return Scenario(session_id, parent, agents, [quota, title], background_agents)


def _parent_until_agents(story: _Story, parent: Lane, background: bool) -> list[dict]:
    """Turns 1-3: clone, inspect, launch the 4 Explore agents; returns the Agent tool_use blocks."""
    reminder = claude_md_reminder(story.scale, story.seed)
    parent.log.append(("snapshot", parent.clock_s - 0.7, None))
    parent.prompt([{"type": "text", "text": reminder}, {"type": "text", "text": PROMPT}], PROMPT, at_s=parent.clock_s - 0.7)
    clone = parent.tool_use("Bash", {"command": "git clone --depth 1 --branch v0.6.3 https://github.com/vllm-project/vllm.git",
                                     "description": "Clone vLLM v0.6.3"})
    parent.send([story.thinking("The user wants a local vLLM checkout and an analysis of its code path.", 320),
                 {"type": "text", "text": "I'll clone vLLM first, then map out the code path."}, clone],
                "tool_use", think_s=0.0)
    output = "Cloning into 'vllm'...\nNote: switching to 'a4b1f9c2'.\n" + prose(story.text, story.sized(120))
    parent.results([_bash_result(clone, output)], tool_s=4.0)
    listing = parent.tool_use("Bash", {"command": "cd vllm && find vllm -maxdepth 2 -type d | sort && wc -l vllm/**/*.py | tail -1",
                                       "description": "Inspect the package layout"})
    parent.send([{"type": "text", "text": "Cloned. Let me look at the package layout."}, listing], "tool_use", think_s=0.1)
    dirs = sorted({path.rsplit("/", 1)[0] for spec in AGENTS for path in spec.files})
    parent.results([_bash_result(listing, "\n".join(dirs) + "\n  184213 total")], tool_s=0.4)
    blocks = []
    for spec in AGENTS:
        task = (f"Thoroughly explore {spec.focus} in {CWD}/vllm. Trace the code path a request takes through these "
                f"modules, name the key classes and functions with file paths and line numbers, and report how "
                f"they interact with the rest of the engine. Start with: {', '.join(spec.files[:3])}.")
        agent_input: dict[str, Any] = {"description": spec.description, "prompt": task, "subagent_type": "Explore"}
        if background:
            agent_input["run_in_background"] = True
        blocks.append(parent.tool_use("Agent", agent_input))
    parent.send([story.thinking("The codebase is large; four parallel Explore agents can cover it.", 900),
                 {"type": "text", "text": "I'll explore the main subsystems in parallel."}] + blocks,
                "tool_use", think_s=0.2)
    return blocks


def _bash_result(tool_use: dict, stdout: str) -> tuple[dict, dict]:
    block = {"tool_use_id": tool_use["id"], "type": "tool_result", "content": stdout, "is_error": False}
    return block, {"stdout": stdout, "stderr": "", "interrupted": False, "isImage": False}


def _explore_agent(story: _Story, spec: AgentSpec, spawn: list[dict], session_id: str) -> tuple[Lane, str, dict]:
    """One Explore sub-agent: a Glob, a run of Reads growing the prompt geometrically, a final report."""
    block = spawn[AGENTS.index(spec)]
    agent_id = "a" + f"{story.ids.rng.getrandbits(64):016x}"[:16]
    # All four start in the same second, right after the launching call completes (docs/inputs.md#session-logs).
    lane = story.lane(agent_id, HAIKU, story.spawn_s + story.timing.uniform(0.0, 0.2),
                      tools=tool_definitions(EXPLORE_TOOLS, story.scale, story.seed),
                      system=explore_system(story.scale, story.seed), ttl_s=TTL_5M_S, beta=BETA_SUBAGENT,
                      message_cache_control={"type": "ephemeral"},
                      client_extras={"metadata": {"user_id": f"session_{session_id}"}})
    task = block["input"]["prompt"]
    lane.prompt([{"type": "text", "text": task}], task, at_s=lane.clock_s)
    root = spec.files[0].rsplit("/", 1)[0]
    glob = lane.tool_use("Glob", {"pattern": f"{root}/**/*.py", "path": f"{CWD}/vllm"})
    first = lane.send([glob], "tool_use", think_s=0.01)
    final_tokens = max(lane.layout.positions[first.pieces] * 1.5, spec.final_tokens * story.scale)
    listing = "\n".join(f"{CWD}/vllm/{path}" for path in spec.files)
    lane.results([({"tool_use_id": glob["id"], "type": "tool_result", "content": listing},
                   {"filenames": [f"{CWD}/vllm/{path}" for path in spec.files], "durationMs": 41,
                    "numFiles": len(spec.files), "truncated": False})], tool_s=story.timing.uniform(0.05, 0.4))
    chars_per_token = CHARS_PER_TOKEN
    # Uneven growth, as when an agent reads a few big modules among many small ones: most turns keep
    # 93-99 % of the prompt cached, a few large reads drop lower.
    weights = [min(4.0, 0.3 + story.text.expovariate(1.0) ** 2) for _ in range(2, spec.calls)]
    base_tokens = None
    for index in range(2, spec.calls):
        path = spec.files[(index - 2) % len(spec.files)]
        read = lane.tool_use("Read", {"file_path": f"{CWD}/vllm/{path}"})
        lead = [] if story.text.random() < 0.6 else [{"type": "text", "text": f"Now let me read `{path}`."}]
        lane.send(lead + [read], "tool_use", think_s=story.timing.uniform(0.02, 0.3))
        if base_tokens is None:
            base_tokens = lane.layout.positions[lane.calls[-1].pieces]
        share = sum(weights[:index - 1]) / sum(weights)
        target = base_tokens * (final_tokens / base_tokens) ** share
        needed = max(60.0, target - lane.layout.positions[-1] - 30)
        source = python_module(story.text, path, int(needed * chars_per_token))
        text = numbered(source)
        before = lane.layout.positions[-1]
        lane.results([({"tool_use_id": read["id"], "type": "tool_result", "content": text},
                       {"type": "text", "file": {"filePath": f"{CWD}/vllm/{path}", "content": source,
                                                 "numLines": source.count("\n") + 1, "startLine": 1,
                                                 "totalLines": source.count("\n") + 1}})],
                     tool_s=story.timing.uniform(0.05, 3.5))
        chars_per_token = len(source) / max(1, lane.layout.positions[-1] - before)
    report = markdown_report(story.text, f"Findings: {spec.description.removeprefix('Explore ')}", list(spec.files),
                             story.sized(spec.report_tokens))
    lane.send([{"type": "text", "text": report}], "end_turn", think_s=story.timing.uniform(0.02, 0.3))
    return lane, agent_id, block


def _parent_after_agents(story: _Story, parent: Lane, agents: list[tuple[Lane, str, dict]]) -> None:
    """Turns 4-6: the agents' results, the Markdown file, the answer, and the pirate follow-up."""
    blocks = []
    for lane, agent_id, tool_use in agents:
        last = lane.calls[-1]
        report, total, tool_uses, duration_ms = _agent_outcome(lane)
        block = agent_tool_result(tool_use_id=tool_use["id"], agent_id=agent_id, report=report, total_tokens=total,
                                  tool_uses=tool_uses, duration_ms=duration_ms)
        structured = {"status": "completed", "prompt": tool_use["input"]["prompt"], "agentId": agent_id,
                      "content": [{"type": "text", "text": report}], "totalDurationMs": duration_ms,
                      "totalTokens": total, "totalToolUseCount": tool_uses, "usage": last.simulated_usage.upstream()}
        blocks.append(block)
        parent.log.append(("result", last.end_s + 0.05, (block, structured)))
    parent.clock_s = max(lane.clock_s for lane, _, _ in agents) + 0.05
    parent.add_message("user", blocks)
    # The seed's resume reads 25,829, creates 5,954 and leaves 12,821 uncached: the breakpoint sits
    # on the second of the four agent results, so the last two are billed as plain input.
    _document_and_follow_up(story, parent, think_s=0.3, cc_block=1)


def _agent_outcome(lane: Lane) -> tuple[str, int, int, int]:
    """An agent's final report, total tokens, tool uses and duration, as Claude Code reports them."""
    last = lane.calls[-1]
    duration_ms = int((last.end_s - lane.calls[0].start_s) * 1000)
    total = last.simulated_usage.prompt_tokens + last.simulated_usage.output_tokens
    return last.content[0]["text"], total, len(lane.calls) - 1, duration_ms


@dataclass(frozen=True)
class _Notice:
    """A background agent's notification: when it reached the parent's queue, its text, and its agent."""

    at_s: float
    text: str
    spec: AgentSpec


def _parent_beside_background_agents(story: _Story, parent: Lane, agents: list[tuple[Lane, str, dict]]) -> None:
    """Turns 4 on with background agents: the launch acknowledgements; a look around and a wait while the
    agents run; then, whenever the parent is idle, the notifications queued so far open a turn (as a
    prompt) in which it checks a file the latest report names; notifications arriving during that turn
    are folded into its next request after the tool result. Once all four have reported, the document
    and the follow-up as in the default story."""
    acks = [async_launch_result(tool_use=tool_use, agent_id=agent_id, output_file=f"{TASKS_DIR}/{agent_id}.output")
            for _, agent_id, tool_use in agents]
    launched_s = max(lane.log[0][1] for lane, _, _ in agents) + 0.03
    parent.results(acks, tool_s=launched_s - parent.clock_s)
    survey = parent.tool_use("Bash", {"command": "cd vllm && ls docs/source tests | head -40",
                                      "description": "List the docs and tests"})
    parent.send([{"type": "text", "text": "The four Explore agents are running in the background. Meanwhile, "
                                          "a quick look at the docs and tests."}, survey], "tool_use", think_s=0.1)
    parent.results([_bash_result(survey, "\n".join(["docs/source:", "design", "models", "serving", "", "tests:",
                                                     "core", "engine", "kernels", "worker"]))], tool_s=0.3)
    parent.send([{"type": "text", "text": "I'll wait for the agents' reports before writing the document."}],
                "end_turn", think_s=0.1)
    pending = []
    for (lane, agent_id, tool_use), spec in zip(agents, AGENTS):
        report, total, tool_uses, duration_ms = _agent_outcome(lane)
        text = task_notification(agent_id=agent_id, tool_use_id=tool_use["id"], description=spec.description,
                                 report=report, total_tokens=total, tool_uses=tool_uses, duration_ms=duration_ms,
                                 output_file=f"{TASKS_DIR}/{agent_id}.output")
        pending.append(_Notice(lane.calls[-1].end_s + NOTIFY_DELAY_S, text, spec))
    pending.sort(key=lambda notice: notice.at_s)
    while True:
        # Idle: what is queued when the first notification arrives (or the turn ends) becomes the next prompt.
        at_s = max(parent.clock_s, pending[0].at_s)
        delivered = [notice for notice in pending if notice.at_s <= at_s]
        pending = pending[len(delivered):]
        for notice in delivered:
            parent.log.append(("enqueue", notice.at_s, notice.text))
        for notice in delivered:
            parent.log.append(("dequeue", at_s, None))
            parent.log.append(("notification", at_s, notice.text))
        parent.add_message("user", [{"type": "text", "text": notice.text} for notice in delivered])
        parent.clock_s = at_s
        if not pending:
            break
        path = delivered[-1].spec.files[1]
        read = parent.tool_use("Read", {"file_path": f"{CWD}/vllm/{path}", "limit": 60})
        topic = delivered[-1].spec.description.removeprefix("Explore ")
        parent.send([{"type": "text", "text": f"The {topic} report is in. Let me check `{path}` against it."}, read],
                    "tool_use", think_s=DELIVERY_TO_REQUEST_S)
        tool_s = story.timing.uniform(0.1, 1.5)
        arrived = [notice for notice in pending if notice.at_s <= parent.clock_s + tool_s]
        pending = pending[len(arrived):]
        for notice in arrived:
            parent.log.append(("enqueue", notice.at_s, notice.text))
        source = python_module(story.text, path, story.sized(300))
        parent.results([({"tool_use_id": read["id"], "type": "tool_result", "content": numbered(source)},
                         {"type": "text", "file": {"filePath": f"{CWD}/vllm/{path}", "content": source,
                                                   "numLines": source.count("\n") + 1, "startLine": 1,
                                                   "totalLines": source.count("\n") + 1}})],
                       tool_s=tool_s, notices=tuple(notice.text for notice in arrived))
        if not pending:
            break
        parent.send([{"type": "text", "text": f"It matches. {len(AGENTS) - len(pending)} of {len(AGENTS)} reports "
                                              f"are in; waiting for the other {len(pending)}."}],
                    "end_turn", think_s=0.1)
    _document_and_follow_up(story, parent, think_s=DELIVERY_TO_REQUEST_S, cc_block=-1)


def _document_and_follow_up(story: _Story, parent: Lane, *, think_s: float, cc_block: int) -> None:
    """The Markdown file from the agents' reports, the answer, and the pirate follow-up after a pause."""
    paths = [path for spec in AGENTS for path in spec.files]
    document = markdown_report(story.text, "vLLM: key components and the request code path", paths, story.sized(7400))
    write = parent.tool_use("Write", {"file_path": f"{CWD}/VLLM_ARCHITECTURE.md", "content": document})
    parent.send([story.thinking("All four agents reported back; I can now write the document.", 700),
                 {"type": "text", "text": "The agents have mapped the code path. Writing the document now."}, write],
                "tool_use", think_s=think_s, cc_block=cc_block)
    parent.results([({"tool_use_id": write["id"], "type": "tool_result",
                      "content": f"File created successfully at: {CWD}/VLLM_ARCHITECTURE.md"},
                     {"type": "create", "filePath": f"{CWD}/VLLM_ARCHITECTURE.md", "content": document,
                      "structuredPatch": []})], tool_s=0.3)
    summary = "I've written `VLLM_ARCHITECTURE.md`. Key components:\n\n" + prose(story.text, story.sized(380))
    parent.send([{"type": "text", "text": summary}], "end_turn", think_s=0.1)
    parent.log.append(("snapshot", parent.clock_s + USER_PAUSE_S - 0.6, None))
    parent.prompt([{"type": "text", "text": FOLLOW_UP}], FOLLOW_UP, at_s=parent.clock_s + USER_PAUSE_S - 0.6)
    pirate = "Arr, matey! Here be the lay o' the vLLM seas:\n\n" + prose(story.text, story.sized(25))
    parent.send([story.thinking("The user wants the summary in pirate speak.", 0), {"type": "text", "text": pirate}],
                "end_turn", think_s=USER_PAUSE_S)


def _switch_model(story: _Story, parent: Lane) -> None:
    """Turn 7 of the model-switch variant: the same conversation sent to Sonnet."""
    parent.model = SONNET
    at_s = parent.clock_s + SWITCH_PAUSE_S - 0.6
    parent.log.append(("snapshot", at_s, None))
    parent.prompt([{"type": "text", "text": SWITCH_PROMPT}], SWITCH_PROMPT, at_s=at_s)
    answer = "- The scheduler\n- The block manager\n- The model runner\n" + prose(story.text, story.sized(40))
    parent.send([{"type": "text", "text": answer}], "end_turn", think_s=SWITCH_PAUSE_S)
