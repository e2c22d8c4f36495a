"""``make test`` leaves ``git status`` clean: a run that starts clean and leaves anything behind fails.

The check is the pair of hooks in ``tests/support/clean_tree.py`` (taken into
``tests/conftest.py``); here it runs for real, in a pytest of its own inside a
throwaway git checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.clean_tree import tree_changes

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = (
    "from tests.support.clean_tree import pytest_sessionfinish as pytest_sessionfinish\n"
    "from tests.support.clean_tree import pytest_sessionstart as pytest_sessionstart\n"
)
# A test that writes what it is told (by an environment variable) into the checkout.
TEST_FILE = """
import os
from pathlib import Path

def test_writes(request):
    name = os.environ.get("WRITE_INTO_TREE")
    if name:
        (request.config.rootpath / name).write_text("left behind")
"""


def git(repo: Path, *args: str) -> None:
    """Run a git command in ``repo`` (no user config needed)."""
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo, check=True, capture_output=True, timeout=60,
    )


def checkout(tmp_path: Path) -> Path:
    """A committed git checkout holding the conftest with the check and one test."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "conftest.py").write_text(CONFTEST)
    (repo / "test_one.py").write_text(TEST_FILE)
    (repo / "tracked.txt").write_text("as committed\n")
    (repo / ".gitignore").write_text("__pycache__/\n.pytest_cache/\nignored/\n")
    (repo / "ignored").mkdir()
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "start")
    return repo


def run_pytest(repo: Path, write: str | None) -> subprocess.CompletedProcess[str]:
    """Run pytest in ``repo``; its one test writes ``write`` into the checkout (if given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(ROOT)
    env["WRITE_INTO_TREE"] = write or ""
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the check is the conftest's: no plugin is needed (faster start)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "test_one.py"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def test_tree_changes_reads_git_status(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    assert tree_changes(repo) == ""
    (repo / "ignored" / "cache.bin").write_text("x")
    assert tree_changes(repo) == ""
    (repo / "stray.txt").write_text("x")
    (repo / "tracked.txt").write_text("rewritten\n")
    changes = tree_changes(repo)
    assert changes is not None and "?? stray.txt" in changes and " M tracked.txt" in changes
    assert tree_changes(tmp_path / "not-a-checkout-here") is None


def test_a_run_that_leaves_a_file_fails(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    done = run_pytest(repo, "stray.txt")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed" in done.stdout  # the test itself passed: the check failed the run
    assert "git checkout changed" in done.stdout and "?? stray.txt" in done.stdout


def test_a_run_that_writes_only_ignored_files_passes(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    done = run_pytest(repo, "ignored/cache.bin")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (repo / "ignored" / "cache.bin").exists()


def test_a_checkout_changed_before_the_run_is_not_checked(tmp_path: Path) -> None:
    """Someone is editing: their changes cannot be told from the run's, so nothing is said."""
    repo = checkout(tmp_path)
    (repo / "tracked.txt").write_text("being edited\n")
    done = run_pytest(repo, "stray.txt")
    assert done.returncode == 0, done.stdout + done.stderr
