"""The training benchmarks a GPU session runs in one go (`make bench-gpu`) still run: tiny sizes, on CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("script,args,expect", [
    ("fp8.py", ["--smoke"], "| fp8 rowwise | scaled_mm |"),
    ("attention.py", ["--quick", "--no-write"], "| attention op, one layer, fwd+bwd |"),
    ("packed_vs_padded.py", ["--quick", "--no-write"], "| 3 cameras always present"),
])
def test_training_benchmark_runs(script, args, expect):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert expect in out.stdout
