"""No input reaches pycocotools' C code in a form that crashes it or exhausts memory: each case of
tests/data/c_library_cases.py runs through the training loader and the evaluator in a child process
(a segfault there fails this test instead of killing pytest) and must end in an error naming the item."""
import json
import os
import subprocess
import sys

import pytest

from tests.data.c_library_cases import GT_CASES, RESULT_CASES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("path", ["train", "eval"])
def test_inputs_that_crash_c_libraries_are_named_errors(tmp_path, path):
    env = dict(os.environ, PYTHONPATH=ROOT, NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "tests.data.c_library_cases", path, str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    # a crash (exit -11 / 139) or a memory blow-up (MemoryError, killed) ends here, naming the last case run
    assert proc.returncode == 0, f"exit {proc.returncode}; {proc.stderr[-3000:]}"
    outcomes = {o["case"]: o for o in map(json.loads, proc.stdout.splitlines())}
    cases = dict(GT_CASES, **(RESULT_CASES if path == "eval" else {}))
    assert sorted(outcomes) == sorted(cases)
    for name, (_, expected) in cases.items():
        o = outcomes[name]
        assert o["error"] == "CocoFormatError", (name, o)
        assert expected in o["message"], (name, o["message"])
