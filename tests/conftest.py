"""Shared fixtures: paths to the example data and the real-format fixture (skipped when absent)."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FIXTURE_DIR = ROOT.parent / "shared" / "fixtures" / "real-proxy-fixed"
EXAMPLES_DIR = ROOT / "examples"


@pytest.fixture
def fixture_dir() -> Path:
    """The real-proxy fixture folder; skips the test when it is absent (a user's fresh clone)."""
    if not (FIXTURE_DIR / "requests.db").is_file():
        pytest.skip("../shared/fixtures/real-proxy-fixed is absent")
    return FIXTURE_DIR


@pytest.fixture
def fixture_db(fixture_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the fixture DB (the scripts add index tables)."""
    target = tmp_path / "requests.db"
    shutil.copyfile(fixture_dir / "requests.db", target)
    return target


@pytest.fixture
def example_db(tmp_path: Path) -> Path:
    """A writable copy of the bundled example DB as the proxy wrote it: the shipped index tables dropped."""
    source = EXAMPLES_DIR / "requests.db"
    if not source.is_file():
        pytest.skip("examples/requests.db not generated yet")
    target = tmp_path / "requests.db"
    shutil.copyfile(source, target)
    with sqlite3.connect(target) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for name in tables:
            if name != "requests" and not name.startswith("sqlite_"):
                db.execute(f'DROP TABLE "{name}"')
    return target
