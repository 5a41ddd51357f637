"""The suite's guard against hangs (conftest._hang_guard): a hung test fails with the stacks
that say where, instead of holding CI until its time limit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HUNG = """
import subprocess, sys, time

def test_a_child_hangs():
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    done = subprocess.run(sleeper, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

def test_the_test_hangs():
    time.sleep(600)
"""


def test_a_hung_child_is_aborted_with_its_stacks_and_a_hung_test_fails(tmp_path):
    (tmp_path / "test_hung.py").write_text(HUNG)
    tests = Path(__file__).parent
    env = {**os.environ, "DATAPREP_TEST_HANG": "2", "PYTHONPATH": str(tests)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest", "test_hung.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "2 failed" in done.stdout, done.stdout
    child, test = done.stdout.split("_ test_the_test_hangs _")
    # the child printed where it waited (faulthandler), and the test's assertion shows it
    assert "Fatal Python error: Aborted" in child and 'File "<string>", line 1' in child, child
    # the test without children fails where it waits, with its own stacks
    assert "hung: still running after 2 s" in test and "in test_the_test_hangs" in test, test
