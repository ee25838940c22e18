#!/usr/bin/env python3
"""Time every tool on a synthetic capture against the bare read-and-parse floor (issue 6)."""
from __future__ import annotations

import compileall
import filecmp
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, TypeVar

import click

from bench.synthetic_capture import generate_capture, parse_size
from bench.trace_diff import trace_differences

ROOT = Path(__file__).resolve().parent.parent

OUT = ROOT / "bench" / "out"
TOOLS = ("message_index", "conversation_index", "traces", "validate", "visualizer", "traces_jsonl", "traces_db_only")
DEFAULT_REPEAT = 3
# A pair counts as run on two full cores when 2 processes got at least this many cores' worth.
FULL_CAPACITY = 1.8
# The workers' own CPU overhead came to 0-14 % in the steadiest runs: a pair whose two runs' CPU times
# differ by more than this most likely ran at different core speeds (the host slowed one).
CPU_MATCH = 0.10
SAMPLE_INTERVAL_S = 0.1
SALT = "bench"  # a fixed salt makes trace outputs comparable across worker counts
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
TIME_BIN = Path("/usr/bin/time")
T = TypeVar("T")


@dataclass
class Measurement:
    """One subprocess run: times, memory, exit code and its --json summary when it printed one."""

    name: str
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    tree_rss_mb: float
    tree_pss_mb: float
    exit_code: int
    summary: dict = field(default_factory=dict)
    note: str = ""
    floor_ratio: float = 0.0  # wall / the floor's wall measured right before it (median over repeats)
    capacity: float = 0.0  # the host's parallel capacity measured right before the pair
    full_cores: bool = True  # chosen among pairs that had two full cores (capacity >= FULL_CAPACITY)


def _tree_memory_bytes(root_pid: int) -> tuple[int, int]:
    """(summed RSS, summed PSS) of a process and all its descendants (/proc scan; workers count too).

    RSS counts a page shared by forked processes once per process; PSS splits it among them, so
    the PSS sum is the memory the tree really holds.
    """
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stream:
                fields = stream.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # the process exited while we looked
        parents[int(entry)] = int(fields[1])
    members, frontier = {root_pid}, [root_pid]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid and child not in members]
        members.update(children)
        frontier.extend(children)
    rss = pss = 0
    for pid in members:
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as stream:
                for line in stream:
                    if line.startswith(b"Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith(b"Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return rss, pss


def measure(name: str, command: list[str], *, cwd: Path = ROOT) -> Measurement:
    """Run `command` as its own child; wall clock, user+sys CPU and ru_maxrss come from wait4 (per child).

    Linux carries the parent's RSS high-water mark into a forked child across exec, so the child
    is started through /usr/bin/time (a few MB) when present and its `%M` is the tool's own peak.
    """
    started = time.perf_counter()
    rss_file = OUT / f".rss-{os.getpid()}"
    if TIME_BIN.is_file():
        command = [str(TIME_BIN), "-f", "%M", "-o", str(rss_file), *command]
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_INTERVAL_S):
            rss, pss = _tree_memory_bytes(process.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # Read the pipes before reaping so a chatty child cannot block on a full pipe.
    stdout, stderr = _drain(process)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    max_rss_kb = usage.ru_maxrss
    if TIME_BIN.is_file():
        max_rss_kb = int(rss_file.read_text().split()[-1])
        rss_file.unlink()
    summary = _json_tail(stdout)
    note = stderr.decode(errors="replace").strip().splitlines()[-1][:160] if process.returncode and stderr else ""
    # wait4's rusage covers the child and its reaped descendants (pool workers): CPU is summed,
    # ru_maxrss is the largest single process; the sampled tree RSS adds up concurrent processes.
    return Measurement(name, round(wall, 3), round(usage.ru_utime + usage.ru_stime, 3),
                       round(max_rss_kb / 1024, 1), round(peak[0] / 2**20, 1), round(peak[1] / 2**20, 1),
                       process.returncode, summary, note)


def _drain(process: subprocess.Popen) -> tuple[bytes, bytes]:
    chunks: dict[str, bytes] = {}

    def read(name: str, stream) -> None:
        chunks[name] = stream.read()

    readers = [threading.Thread(target=read, args=("out", process.stdout)),
               threading.Thread(target=read, args=("err", process.stderr))]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    return chunks.get("out", b""), chunks.get("err", b"")


def _json_tail(stdout: bytes) -> dict:
    """The --json summary a tool printed (the last JSON object on stdout), or {}."""
    text = stdout.decode(errors="replace")
    start = text.find("{")
    while start != -1:
        try:
            value = json.loads(text[start:])
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        return value if isinstance(value, dict) else {}
    return {}


def ensure_capture(size: str, seed: int, *, regenerate: bool) -> tuple[Path, dict]:
    """The cached capture for (size, seed) under bench/out/, generated when missing."""
    target_bytes = parse_size(size)
    directory = OUT / f"capture-{size.upper()}-seed{seed}"
    stamp = directory / "capture.json"
    if stamp.is_file() and not regenerate:
        return directory, json.loads(stamp.read_text())
    click.echo(f"Generating a {size} capture in {directory} ...", err=True)
    summary = asdict(generate_capture(directory, target_bytes=target_bytes, seed=seed))
    stamp.write_text(json.dumps(summary, indent=2))
    return directory, summary


def _python() -> str:
    return sys.executable


def _spin(iterations: int) -> float:
    """Seconds a pure-Python loop takes (no memory traffic: only the core's own speed)."""
    started = time.perf_counter()
    total = 0
    for value in range(iterations):
        total += value
    return time.perf_counter() - started


def parallel_capacity(iterations: int = 10_000_000, rounds: int = 3) -> float:
    """How many cores' worth of work 2 concurrent processes got, vs 1 alone (2.0 on an idle 2-core host).

    On a shared virtual machine the second vCPU can be much slower while neighbours are busy; the
    speed-up of any tool with 2 workers is bounded by this figure, measured around the runs
    (median of `rounds` alternations of one process alone and two together).
    """
    ratios = []
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for _ in range(rounds):
            alone = pool.apply(_spin, (iterations,))
            started = time.perf_counter()
            pool.map(_spin, [iterations, iterations], chunksize=1)
            ratios.append(2 * alone / (time.perf_counter() - started))
    return round(sorted(ratios)[len(ratios) // 2], 2)


def _low_median(items: list[T], key: Callable[[T], float] = lambda item: item) -> T:
    """The middle item by `key` (the lower one of the two middle items for an even count)."""
    return sorted(items, key=key)[(len(items) - 1) // 2]


@dataclass
class Scaling:
    """A tool's speed-up with `workers` over 1: the median of back-to-back pairs (all listed, each with
    the CPU time of its multi-worker run over that of its 1-worker run)."""

    tool: str
    workers: int
    pair_ratios: list[float]
    cpu_ratios: list[float]
    full_cores: bool

    @property
    def speedup(self) -> float:
        return _low_median(self.pair_ratios)

    def same_speed(self) -> Optional[float]:
        """The median speed-up of the pairs whose two runs' CPU times are within CPU_MATCH (None when
        there was none): the pairs that ran at one core speed."""
        ratios = [ratio for ratio, cpu in zip(self.pair_ratios, self.cpu_ratios) if abs(cpu - 1) <= CPU_MATCH]
        return _low_median(ratios) if ratios else None


def _chosen(runs: list[Measurement], *, parallel: bool) -> Measurement:
    """The median run by floor ratio (among those with two full cores, for a parallel tool), with the
    largest memory peaks of all runs."""
    full = [run for run in runs if run.capacity >= FULL_CAPACITY] if parallel else runs
    candidates = full or runs
    chosen = _low_median(candidates, key=lambda item: item.floor_ratio)
    chosen.full_cores = bool(full)
    chosen.max_rss_mb = max(run.max_rss_mb for run in runs)
    chosen.tree_rss_mb = max(run.tree_rss_mb for run in runs)
    chosen.tree_pss_mb = max(run.tree_pss_mb for run in runs)
    return chosen


class Timer:
    """Runs measurements, each paired with a floor run just before it.

    The machine is shared and its speed drifts by up to 2x over minutes (other virtual machines on
    the host), so a tool's time is only comparable with a floor measured at the same moment: each
    repeat runs the floor, then the tool, and the tool's ratio is the median of those pairs.
    """

    def __init__(self, db: Path, repeat: int, jsonl: Optional[Path] = None) -> None:
        self.floor_command = [_python(), str(ROOT / "bench" / "floor.py"), str(db)]
        self.jsonl_floor_command = [_python(), str(ROOT / "bench" / "floor.py"), "--jsonl", str(jsonl)]
        self.repeat = repeat
        self.floors: list[Measurement] = []

    def floor(self) -> Measurement:
        run = measure("floor (read+parse)", self.floor_command)
        self.floors.append(run)
        return run

    def run(self, name: str, command: list[str], *, repeat: Optional[int] = None) -> Measurement:
        """The run with the median floor ratio of `repeat` pairs, with the largest memory peaks seen."""
        runs = []
        for _ in range(repeat or self.repeat):
            floor = self.floor()
            runs.append(self._timed(name, command, floor))
        return _chosen(runs, parallel=False)

    def run_scaling(self, name: str, commands: dict[int, list[str]]) -> tuple[list[Measurement], Scaling]:
        """Each worker count's run (as `run`) and the speed-up of the most workers over 1.

        A repeat measures the host's parallel capacity, runs the floor, then every worker count
        back to back (in alternating order, so a drift in host speed does not favour one), so the
        speed-up compares runs seconds apart rather than minutes. The runs with workers, and the
        speed-up, are taken from the repeats that had two full cores, if any.
        """
        counts = sorted(commands)
        runs: dict[int, list[Measurement]] = {count: [] for count in counts}
        for index in range(self.repeat):
            capacity = parallel_capacity(rounds=1)
            floor = self.floor()
            for count in counts if index % 2 == 0 else reversed(counts):
                run = self._timed(f"{name} -w{count}", commands[count], floor)
                run.capacity = capacity if count > 1 else 0.0
                runs[count].append(run)
        most = counts[-1]
        chosen = [_chosen(runs[count], parallel=count > 1) for count in counts]
        pairs = list(zip(runs[counts[0]], runs[most]))
        full = [(single, multi) for single, multi in pairs if multi.capacity >= FULL_CAPACITY]
        ratios = [round(single.wall_s / multi.wall_s, 2) for single, multi in full or pairs]
        cpu = [round(multi.cpu_s / single.cpu_s, 2) for single, multi in full or pairs]
        return chosen, Scaling(name, most, ratios, cpu, bool(full))

    def run_against_both_floors(self, name: str, command: list[str]) -> "TwoFloors":
        """A tool reading only the logs, timed as `run` and also against the JSONL floor.

        Each repeat runs the DB floor, the JSONL floor, then the tool: both ratios come from runs
        seconds apart. The reported run is the one with the median ratio to the DB floor.
        """
        measure("floor jsonl (read+parse)", self.jsonl_floor_command)  # warms the page cache for the logs
        runs, floors, jsonl_ratios = [], [], []
        for _ in range(self.repeat):
            floor = self.floor()
            jsonl_floor = self._timed("floor jsonl (read+parse)", self.jsonl_floor_command, floor)
            run = self._timed(name, command, floor)
            floors.append(jsonl_floor)
            runs.append(run)
            jsonl_ratios.append(round(run.wall_s / jsonl_floor.wall_s, 2))
        chosen_floor = _chosen(floors, parallel=False)
        return TwoFloors(name, _chosen(runs, parallel=False), chosen_floor,
                         [round(run.floor_ratio, 2) for run in runs], jsonl_ratios)

    def _timed(self, name: str, command: list[str], floor: Measurement) -> Measurement:
        run = measure(name, command)
        run.floor_ratio = run.wall_s / floor.wall_s
        return run

    def floor_summary(self) -> Measurement:
        """The median floor run of the session (the table's first row)."""
        chosen = _low_median(self.floors, key=lambda item: item.wall_s)
        chosen.floor_ratio = 1.0
        return chosen


@dataclass
class TwoFloors:
    """A JSONL-only tool's ratios, per repeat, to the DB floor and to the JSONL floor run before it."""

    tool: str
    run: Measurement
    jsonl_floor: Measurement  # the JSONL floor run with the median ratio to its DB floor
    db_ratios: list[float]
    jsonl_ratios: list[float]

    def line(self) -> str:
        pairs = ", ".join(f"{db:.2f}/{jsonl:.2f}" for db, jsonl in zip(self.db_ratios, self.jsonl_ratios))
        floor = self.jsonl_floor.summary
        return (f"{self.tool}: {_low_median(self.db_ratios):.2f}x the DB floor, {_low_median(self.jsonl_ratios):.2f}x the "
                f"JSONL floor ({floor.get('lines', 0)} lines, {floor.get('payload_bytes', 0) / 1e6:.1f} MB of logs; "
                f"medians of the repeats, each x DB floor / x JSONL floor: {pairs}).")


def run_tools(capture: Path, work: Path, tools: tuple[str, ...], workers: int, timer: Timer
              ) -> tuple[list[Measurement], list[Scaling], dict]:
    """Run the pipeline in order on a fresh copy of the DB (index tables go into the copy).

    The two index builders run once (a second run would find nothing new to do), also when not
    timed unless only the JSONL-only route is; the other tools are idempotent and run `timer.repeat` times.
    """
    db = work / "requests.db"
    jsonl = capture / "jsonl"
    results: list[Measurement] = []
    scalings: list[Scaling] = []
    extra: dict = {}
    py = _python()
    # The later tools read both indexes, as in the user's workflow: an index not being timed is
    # still built (untimed), or the visualizer would see every request as unlinked.
    index_commands = {
        "message_index": ("build_message_index", [py, "build_message_index.py", str(db), "--json"]),
        "conversation_index": ("build_conversation_index",
                               [py, "build_conversation_index.py", str(db), "--projects-path", str(jsonl), "--json"]),
    }
    reads_the_db = set(tools) - {"traces_jsonl"}
    for key, (name, command) in index_commands.items():
        if key in tools:
            results.append(timer.run(name, command, repeat=1))
        elif reads_the_db:
            measure(name, command)
    counts = sorted({1, workers})

    def timed(name: str, command_for: Callable[[int], list[str]]) -> None:
        if len(counts) == 1:
            results.append(timer.run(f"{name} -w1", command_for(1)))
            return
        runs, scaling = timer.run_scaling(name, {count: command_for(count) for count in counts})
        results.extend(runs)
        scalings.append(scaling)

    trace_dirs = {count: work / f"traces_w{count}" for count in counts}
    if "traces" in tools:
        timed("build_minimal_traces", lambda count: [
            py, "build_minimal_traces.py", str(db), "--jsonl-dir", str(jsonl), "--output-dir", str(trace_dirs[count]),
            "--include-subagents", "--salt", SALT, "--workers", str(count), "--json"])
        if len(trace_dirs) == 2:
            extra["identical"] = _same_tree(trace_dirs[1], trace_dirs[workers])
    if "traces_db_only" in tools:
        # The DB-only route (docs/routes.md#db-only) on the same DB, its logs left unread.
        db_only_dirs = {count: work / f"traces_db_only_w{count}" for count in counts}
        timed("build_minimal_traces db-only", lambda count: [
            py, "build_minimal_traces.py", str(db), "--db-only", "--output-dir", str(db_only_dirs[count]),
            "--include-subagents", "--salt", SALT, "--workers", str(count), "--json"])
        if len(db_only_dirs) == 2:
            extra["identical_db_only"] = _same_tree(db_only_dirs[1], db_only_dirs[workers])
        if "traces" in tools:
            extra["db_only_vs_traces"] = trace_differences(trace_dirs[1], db_only_dirs[1])
    traces = trace_dirs[1] if "traces" in tools else None
    if "validate" in tools:
        script = ROOT / "validate_trace_cache.py"
        if not script.is_file() or traces is None:
            extra["validate"] = "skipped: validate_trace_cache.py is absent" if not script.is_file() else "skipped: needs traces"
        else:
            timed("validate_trace_cache", lambda count: [
                py, str(script), str(traces), "--db", str(db), "--jsonl-dir", str(jsonl), "--workers", str(count)])
    if "visualizer" in tools:
        script = ROOT / "complete_cache_visualizer.py"
        if not script.is_file():
            extra["visualizer"] = "skipped: complete_cache_visualizer.py is absent"
        else:
            timed("complete_cache_visualizer combined", lambda count: [
                py, str(script), str(db), "--conversation-id", "combined", "--output", str(work / f"combined_w{count}.html"),
                "--workers", str(count)])
    if "traces_jsonl" in tools:
        # The JSONL-only route runs in one process (--workers does not apply to it): -w1 only.
        both = timer.run_against_both_floors("build_minimal_traces jsonl-only -w1", [
            py, "build_minimal_traces.py", "--jsonl-dir", str(jsonl), "--output-dir", str(work / "traces_jsonl"),
            "--include-subagents", "--salt", SALT, "--json"])
        results.extend([both.jsonl_floor, both.run])
        extra["traces_jsonl"] = {"db_ratios": both.db_ratios, "jsonl_ratios": both.jsonl_ratios, "line": both.line()}
    return results, scalings, extra


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _same_tree(left: Path, right: Path) -> bool:
    """True when both directories hold the same files with identical bytes (recursively)."""
    comparison = filecmp.dircmp(left, right)
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, comparison.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_tree(left / name, right / name) for name in comparison.common_dirs)


def format_table(floor: Measurement, results: list[Measurement], rows: int, db_mb: float) -> str:
    """The per-tool table: wall, CPU, RSS, throughput, memoization, ratio to the floor, host capacity."""
    header = (f"{'tool':38} {'wall s':>8} {'cpu s':>8} {'maxRSS MB':>10} {'treeRSS MB':>11} {'treePSS MB':>11} {'rows/s':>9} "
              f"{'MB/s':>8} {'tokenized/requested':>24} {'x floor':>8} {'cap':>6}")
    lines = [header, "-" * len(header)]
    for run in [floor] + results:
        tokens = ""
        if run.summary.get("tokens_requested"):  # absent or 0 on the JSONL-only route, which hashes no text
            requested, tokenized = run.summary["tokens_requested"], run.summary["tokens_tokenized"]
            tokens = f"{tokenized / 1e6:.1f}M/{requested / 1e6:.1f}M={tokenized / max(requested, 1):.1%}"
        capacity = f"{run.capacity:.2f}{'' if run.full_cores else '*'}" if run.capacity else ""
        status = "" if run.exit_code == 0 else f"  (exit {run.exit_code}: {run.note})"
        lines.append(f"{run.name:38} {run.wall_s:8.2f} {run.cpu_s:8.2f} {run.max_rss_mb:10.1f} {run.tree_rss_mb:11.1f} "
                     f"{run.tree_pss_mb:11.1f} "
                     f"{rows / run.wall_s:9.0f} {db_mb / run.wall_s:8.1f} {tokens:>24} "
                     f"{run.floor_ratio:8.2f} {capacity:>6}{status}")
    lines.append(f"cap: the host's parallel capacity (2 processes of pure CPU work vs 1) right before the reported "
                 f"pair; multi-worker figures come from pairs with cap >= {FULL_CAPACITY} (* = there was none).")
    return "\n".join(lines)


@click.command()
@click.option("--size", default="1GB", show_default=True, help="Capture size: 200MB, 1GB, 4GB (cached under bench/out/).")
@click.option("--tools", "tool_list", default=",".join(TOOLS), show_default=True,
              help=f"Comma-separated subset of: {', '.join(TOOLS)}.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1),
              help="Worker count compared with 1 on the trace builder, validator and visualizer.")
@click.option("--repeat", default=DEFAULT_REPEAT, show_default=True, type=click.IntRange(1),
              help="Runs of each idempotent tool, each after its own floor run; the median ratio is kept.")
@click.option("--seed", default=1, show_default=True, type=int, help="Capture seed.")
@click.option("--regenerate", is_flag=True, help="Regenerate the capture even when a cached one exists.")
@click.option("--keep", is_flag=True, help="Keep the work copy (DB with indexes, traces) after the run.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write all measurements to this JSON file.")
def main(size: str, tool_list: str, workers: int, repeat: int, seed: int, regenerate: bool, keep: bool,
         json_out: Optional[Path]) -> None:
    """Generate (or reuse) a capture, then time each tool and the read-and-parse floor.

    \b
    Example:
        python3 -m bench.run --size 1GB
        python3 -m bench.run --size 200MB --tools message_index,traces --workers 2
    """
    tools = tuple(name.strip() for name in tool_list.split(",") if name.strip())
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        raise click.BadParameter(f"unknown tools {unknown}; choose from {', '.join(TOOLS)}", param_hint="--tools")
    capture, capture_summary = ensure_capture(size, seed, regenerate=regenerate)
    work = OUT / f"work-{size.upper()}-seed{seed}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copyfile(capture / "requests.db", work / "requests.db")
    # Flush the copy now: otherwise the first tool's first COMMIT pays for writing back the whole
    # freshly copied file, which a real capture already on disk would not.
    _fsync(work / "requests.db")
    db_mb = (work / "requests.db").stat().st_size / 1e6
    # Python caches compiled modules in __pycache__, unless PYTHONDONTWRITEBYTECODE is set (as in
    # some sandboxes): then every tool run would compile lib/ again (~0.14 s). Compiled once here,
    # each run imports it as any run after a user's first does.
    compileall.compile_dir(ROOT / "lib", quiet=1)
    capacity_before = parallel_capacity()
    timer = Timer(work / "requests.db", repeat, capture / "jsonl")
    timer.floor()  # warms the page cache, as the tools' own earlier runs will have
    results, scalings, extra = run_tools(capture, work, tools, workers, timer)
    floor = timer.floor_summary()
    capacity_after = parallel_capacity()
    rows = floor.summary.get("rows", capture_summary["rows"])
    click.echo(f"Capture: {capture} — {rows} rows, {db_mb:.0f} MB DB, {capture_summary['jsonl_files']} JSONL files, "
               f"{floor.summary.get('chunks', 0)} stream chunks.")
    click.echo(format_table(floor, results, rows, db_mb))
    click.echo(f"Host parallel capacity (2 processes of pure CPU work vs 1; 2.00 = two full cores): "
               f"{capacity_before:.2f} before the runs, {capacity_after:.2f} after.")
    for scaling in scalings:
        identical = {"build_minimal_traces": f"; outputs byte-identical: {extra.get('identical')}",
                     "build_minimal_traces db-only": f"; outputs byte-identical: {extra.get('identical_db_only')}"
                     }.get(scaling.tool, "")
        pairs = ", ".join(f"{ratio:.2f} (cpu x{cpu:.2f})" for ratio, cpu in zip(scaling.pair_ratios, scaling.cpu_ratios))
        cores = "" if scaling.full_cores else "; no pair had two full cores"
        same_speed = scaling.same_speed()
        within = (f"{same_speed:.2f}x" if same_speed is not None else "none") + \
            f" over the pairs with cpu x{1 - CPU_MATCH:.2f}-{1 + CPU_MATCH:.2f}"
        click.echo(f"{scaling.tool}: {scaling.workers} workers {scaling.speedup:.2f}x faster than 1 "
                   f"(median of back-to-back pairs: {pairs}{cores}; {within}){identical}.")
    for key in ("validate", "visualizer"):
        if key in extra:
            click.echo(f"{key}: {extra[key]}")
    if "traces_jsonl" in extra:
        click.echo(extra["traces_jsonl"]["line"])
    if "db_only_vs_traces" in extra:
        click.echo(f"DB-only vs DB+JSONL traces (-w1, values differing per field): {json.dumps(extra['db_only_vs_traces'])}")
    if json_out is not None:
        json_out.write_text(json.dumps({"size": size, "seed": seed, "repeat": repeat,
                                        "parallel_capacity": [capacity_before, capacity_after], "rows": rows, "db_mb": db_mb,
                                        "capture": capture_summary, "floor": asdict(floor),
                                        "floors": [asdict(run) for run in timer.floors],
                                        "results": [asdict(run) for run in results],
                                        "scaling": [{**asdict(scaling), "speedup": scaling.speedup,
                                                     "same_speed_speedup": scaling.same_speed()}
                                                    for scaling in scalings], "extra": extra}, indent=2))
    if not keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
