"""Atomic writes: all or nothing, usual permissions, no temp file left behind."""
from __future__ import annotations

import os

import pytest

from lib.atomic import atomic_writer, write_atomic


def test_write_atomic_replaces_content_with_umask_permissions(tmp_path):
    target = tmp_path / "out" / "trace.json"
    write_atomic(target, b"old")
    write_atomic(target, "new")
    assert target.read_text() == "new"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["trace.json"]


def test_failed_write_keeps_previous_version(tmp_path):
    target = tmp_path / "manifest.json"
    write_atomic(target, "complete")
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as stream:
            stream.write("partial")
            raise RuntimeError("interrupted")
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
