"""User errors end a tool with one line and status 1; --debug / RESDET_DEBUG show the traceback;
internal errors keep theirs."""
import os
import subprocess
import sys

import pytest

from resdet.config import ConfigError
from resdet.runs.cli import run_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fails_with(exc):
    def main(argv):
        assert "--debug" not in argv  # the tool's own parser never sees it
        raise exc
    return main


def test_user_errors_print_one_line(capsys, monkeypatch):
    monkeypatch.delenv("RESDET_DEBUG", raising=False)
    assert run_tool(_fails_with(ConfigError("Unknown key 'SOLVER.BASELR'")), ["x.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown key 'SOLVER.BASELR'\n") and "Traceback" not in err and "--debug" in err
    assert run_tool(lambda argv: open(os.path.join(str(argv[0]), "missing.json")), ["/nowhere"]) == 1
    assert "No such file or directory: '/nowhere/missing.json'" in capsys.readouterr().err
    assert run_tool(lambda argv: {"bbox": 1.0}, []) == 0 and run_tool(lambda argv: 3, []) == 3


def test_debug_and_internal_errors_keep_the_traceback(monkeypatch):
    monkeypatch.delenv("RESDET_DEBUG", raising=False)
    with pytest.raises(ConfigError):
        run_tool(_fails_with(ConfigError("bad")), ["--debug"])
    monkeypatch.setenv("RESDET_DEBUG", "1")
    with pytest.raises(ConfigError):
        run_tool(_fails_with(ConfigError("bad")), [])
    monkeypatch.delenv("RESDET_DEBUG")
    with pytest.raises(ZeroDivisionError):  # a bug is not the user's error
        run_tool(lambda argv: 1 / 0, [])


def test_a_tool_with_an_unknown_key(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, NO_ALBUMENTATIONS_UPDATE="1")
    env.pop("RESDET_DEBUG", None)
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_det.py"), os.path.join(ROOT, "configs", "quickstart_shapes.yaml"),
           "SOLVER.BASELR", "0.1", "OUTPUT_DIR", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert "error: Unknown key 'SOLVER.BASELR' on the command line. Did you mean 'SOLVER.BASE_LR'?" in proc.stderr
    assert "Traceback" not in proc.stderr and not os.listdir(tmp_path)  # nothing started
