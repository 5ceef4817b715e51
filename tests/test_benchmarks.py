"""benchmarks/gpu.py runs where there is no GPU (smaller, and says so), so that CI exercises
the script a lent GPU will run; its figures here are not asserted, its host reads are."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_runs_on_a_cpu_and_prints_its_ratios():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu.py"), "--quick"],
                         capture_output=True, text=True, timeout=900, check=True).stdout
    if not torch.cuda.is_available():
        assert out.startswith("device: no GPU") and "not measured" in out
    reads = re.search(r"host reads per batch: baseline ([\d.]+), now ([\d.]+)", out)
    assert reads and float(reads[1]) >= 4 and float(reads[2]) == 0.0
    for line in ("now / baseline = ", "bf16 / fp32 step time = "):
        assert re.search(re.escape(line) + r"\d+\.\d{3}", out), out
    assert re.search(r"bf16: [\d.]+ ms a step, [\d.]+ GFLOP a step", out)


def test_the_data_memory_benchmark_prints_a_trials_private_memory_before_and_now():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/data_memory.py"), "--quick"],
                         capture_output=True, text=True, timeout=900, check=True).stdout
    private = dict(re.findall(r"(float32 copies|uint8 map).*?private\s+([\d.]+) MB", out))
    # 7,000 28x28 images: 22 MB as float32; memory, not time, so a bound that load cannot move
    assert float(private["float32 copies"]) > 15 and float(private["uint8 map"]) < 3, out
    assert re.search(r"private memory now / baseline = 0\.\d{3}", out), out
