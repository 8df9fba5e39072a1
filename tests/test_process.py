"""megatron_ipt.process.die_with_parent: a child whose parent is gone does not run on."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _orphan_after_parent_exits(tmp_path, pass_parent: bool) -> str:
    """A parent starts a child and exits at once; the child, still starting (as a spawned worker importing for
    seconds), then asks to die with its parent. Returns what the child managed to write."""
    log = tmp_path / "child.log"
    child = textwrap.dedent(
        f"""
        import sys, time
        parent = int(sys.argv[1])
        time.sleep(1.0)  # the parent is gone by now
        from megatron_ipt.process import die_with_parent
        try:
            die_with_parent(**({{"parent": parent}} if {pass_parent} else {{}}))
            time.sleep(0.5)
            open({str(log)!r}, "a").write("ran on")
        except BaseException as e:
            open({str(log)!r}, "a").write(repr(e))
        """
    )
    parent = (
        f"import os, subprocess, sys; print(subprocess.Popen([sys.executable, '-c', {child!r}, str(os.getpid())]).pid)"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    pid = int(subprocess.run([sys.executable, "-c", parent], env=env, check=True, capture_output=True).stdout)
    deadline = time.time() + 60
    while os.path.exists(f"/proc/{pid}") and time.time() < deadline:  # the child ends either way
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}"), "the child is still running after 60 s"
    return log.read_text() if log.exists() else ""


def test_a_child_whose_parent_died_while_it_was_starting_ends_itself(tmp_path):
    assert _orphan_after_parent_exits(tmp_path, pass_parent=True) == ""


def test_without_the_parents_pid_such_a_child_runs_on(tmp_path):
    """Why the parent's pid is passed: the child's own view (getppid) is already its new parent's."""
    assert _orphan_after_parent_exits(tmp_path, pass_parent=False) == "ran on"
