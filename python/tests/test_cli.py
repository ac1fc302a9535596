"""`python -m mlakv check|demo` runs the CLI's commands with the same flags and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlakv import _mlakv

pytestmark = pytest.mark.skipif(not _mlakv.has_cli, reason="built without CLI11: no check/demo in the extension")


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "mlakv", *args], capture_output=True, text=True, timeout=timeout)


def test_check_cpu():
    r = run("check", "--device", "cpu")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 failed" in r.stdout and "write_cache" in r.stdout


def test_demo_cpu_small():
    r = run("demo", "--device", "cpu", "--steps", "1", "--batch", "2", "--context-lens", "200,70",
            "--kv-cache-dtype", "fp8_ds_mla", "--dcp", "2", "--interleave", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fp8_ds_mla" in r.stdout and "within" in r.stdout


def test_usage_errors_exit_2():
    r = run("check", "--device", "tpu")
    assert r.returncode == 2 and "--device" in r.stderr
    assert run("demo", "--no-such-flag").returncode == 2
    assert run().returncode == 2  # a subcommand is required
    h = run("demo", "--help")
    assert h.returncode == 0 and "--kv-cache-dtype" in h.stdout
