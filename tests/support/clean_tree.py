"""A test run that starts from a clean checkout must leave it clean (``make test`` keeps ``git status`` empty).

The two pytest hooks below are taken into ``tests/conftest.py``. At the start of a run
they note ``git status --porcelain`` of the rootdir; when it was empty, a run that leaves
anything behind (a stray file, a rewritten tracked file) fails with what it left. A
checkout that was already changed at the start (someone is editing) is not checked:
its changes cannot be told from the run's.

    changes = tree_changes(Path("."))      # "" clean, None when not a git checkout
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

_AT_START = pytest.StashKey[str | None]()


def tree_changes(root: Path) -> str | None:
    """``git status --porcelain`` of the checkout at ``root``; None when it is not one (or git is missing)."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(
            [git, "status", "--porcelain", "--untracked-files=all"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note whether the checkout is clean before any test runs."""
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller checks
        return
    session.stash[_AT_START] = tree_changes(session.config.rootpath)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when it started clean and left the checkout changed."""
    if session.stash.get(_AT_START, None) != "":
        return
    left = tree_changes(session.config.rootpath)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"the tests left the git checkout changed (git status --porcelain):\n{left}"
    if reporter is not None:
        reporter.write_sep("=", "checkout left changed", red=True)
        reporter.write_line(message)
    else:
        print(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
