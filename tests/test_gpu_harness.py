"""The harness of `pytest -m gpu` (tests/gpu/conftest.py), run in a separate pytest on two stand-in test
modules named like GPU modules: the cheapest module runs first whatever the command line's order, a test
past its time limit fails with GpuTestTimeout and the next runs, and the output names every GPU test that
ran with its outcome and seconds."""
import os
import textwrap

pytest_plugins = ["pytester"]

CONFTEST = textwrap.dedent('''
    from tests.conftest import pytest_addoption, pytest_configure  # noqa: F401 (--gpu-device, the marker)
    from tests.gpu.conftest import (pytest_collection_modifyitems, pytest_runtest_call,  # noqa: F401
                                    pytest_runtest_makereport, pytest_terminal_summary)
''')


def test_gpu_tests_run_cheapest_first_under_time_limits_and_are_listed(pytester, monkeypatch):
    # the separate pytest runs in a temporary folder: the checkout's `tests` package must be importable there
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_cifar_fast_step=textwrap.dedent('''
        import time
        import pytest
        pytestmark = pytest.mark.gpu

        def test_slow():
            time.sleep(30)

        def test_after_the_slow_one():
            pass
    '''), test_device_parity=textwrap.dedent('''
        import pytest
        pytestmark = pytest.mark.gpu

        def test_quick():
            pass
    '''))
    result = pytester.runpytest_subprocess("test_cifar_fast_step.py", "test_device_parity.py", "-m", "gpu",
                                           "--gpu-device", "cpu", "--gpu-test-seconds", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "GpuTestTimeout: test_cifar_fast_step.py::test_slow ran past its limit of 2 s" in out
    summary = out[out.index("GPU tests that ran (3)"):]
    lines = [line.split() for line in summary.splitlines()[1:4]]
    assert [(line[0], line[-1]) for line in lines] == [
        ("passed", "test_device_parity.py::test_quick"),            # the cheapest module first
        ("failed", "test_cifar_fast_step.py::test_slow"),
        ("passed", "test_cifar_fast_step.py::test_after_the_slow_one")]
    assert float(lines[1][1]) < 10  # stopped at its limit, not after its 30 s
