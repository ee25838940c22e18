"""lib/'s layout: sub-packages that follow the pipeline, imports in one direction, no cycles.

core (lib/*.py)  <-  capture, hashing, cache  <-  traces  <-  validate;  report uses capture,
hashing and cache; hashing reads the JSONL logs through capture (the JSONL-only block layout).
synthetic (the fake-capture generator) is for examples/, bench/ and tests only.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "lib"
CORE = {"atomic", "cli", "db", "errors", "problems", "records", "timestamps", "worker_guard"}
# What each package may import besides itself and the core.
ALLOWED = {
    "capture": set(),
    "hashing": {"capture"},
    "cache": set(),
    "traces": {"capture", "hashing"},
    "validate": {"capture", "hashing", "cache", "traces"},
    "report": {"capture", "hashing", "cache"},
    "synthetic": {"hashing"},
}
MAX_MODULES = 10
SCRIPTS = ["build_message_index", "build_conversation_index", "build_minimal_traces", "validate_trace_cache",
           "complete_cache_visualizer"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lib_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(LIB.rglob("*.py"))}


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every lib module `path` imports, at any level of the file (functions and TYPE_CHECKING too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (lib/ uses absolute imports)"
            if node.module:
                # `from lib.hashing import tokenizer` imports the submodule, not only the package.
                found.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                             for alias in node.names)
    return {name for name in found if name == "lib" or name.startswith("lib.")}


def package_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 2 and parts[1] in CORE or module == "lib":
        return "core"
    return parts[1]


def test_every_module_is_in_the_core_or_a_pipeline_package():
    top_level = {path.stem for path in LIB.glob("*.py")} - {"__init__"}
    assert top_level == CORE
    packages = {path.parent.name for path in LIB.glob("*/__init__.py")}
    assert packages == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_package_has_more_than_ten_modules(package):
    modules = [path for path in (LIB / package).glob("*.py") if path.name != "__init__.py"]
    assert len(modules) <= MAX_MODULES


def test_packages_import_only_in_pipeline_order():
    modules = lib_modules()
    wrong = []
    for name, path in modules.items():
        package = package_of(name)
        allowed = {"core"} | ({package} | ALLOWED[package] if package != "core" else set())
        wrong += [f"{name} imports {target}" for target in sorted(imported_modules(path, set(modules)))
                  if package_of(target) not in allowed]
    assert wrong == []


def test_no_import_cycles():
    modules = lib_modules()
    graph = {name: {target for target in imported_modules(path, set(modules)) if target != name and target in modules}
             for name, path in modules.items()}
    # A package's __init__ is imported before its modules; it must not import them back.
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> list[str]:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                return trail + [name, target]
            if target not in state and (cycle := visit(target, trail + [name])):
                return cycle
        state[name] = "done"
        return []

    cycles = [cycle for name in sorted(graph) if name not in state and (cycle := visit(name, []))]
    assert cycles == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_tools_never_import_the_generator(script):
    imported = imported_modules(ROOT / f"{script}.py", set(lib_modules()))
    assert imported and not any(package_of(name) == "synthetic" for name in imported)
