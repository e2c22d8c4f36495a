"""The one walk up the process tree (``collector/ancestry.py``), on real processes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psutil

from dgx_spark.collector.ancestry import ancestor_pids, parent_pid
from dgx_spark.supervisor.signals import protected_pids


def test_this_process_and_its_ancestors_as_psutil_sees_them() -> None:
    expected = [os.getpid()] + [p.pid for p in psutil.Process().parents() if p.pid > 1]
    assert ancestor_pids() == expected
    assert protected_pids() == frozenset({0, 1, *expected})


def test_a_child_whose_name_has_parentheses_and_spaces(tmp_path: Path) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    odd = tmp_path / "a) b (c"  # the kernel's comm is the file's name: parsing must not trip on it
    odd.symlink_to(sleep)
    child = subprocess.Popen([str(odd), "60"])
    try:
        assert psutil.Process(child.pid).name() == "a) b (c"
        assert parent_pid(child.pid) == os.getpid()
        assert ancestor_pids(child.pid) == [child.pid, *ancestor_pids()]
    finally:
        child.kill()
        child.wait()
    assert parent_pid(child.pid) is None  # gone: nothing to read


def test_a_missing_proc_gives_just_the_pid(tmp_path: Path) -> None:
    assert ancestor_pids(1234, proc=str(tmp_path)) == [1234]
