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
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu.py"), "--quick",
                          "--ddp-cpu", "2"],
                         capture_output=True, text=True, timeout=900, check=True).stdout
    if not torch.cuda.is_available():
        assert out.startswith("device: no GPU") and "not measured" in out
        # the DDP measurement's code ran: two gloo processes, each epoch timed
        assert re.search(r"DDP over 2 CPU processes .*: epoch [\d.]+ ms on 1 worker, "
                         r"[\d.]+ ms on 2; speed-up = \d+\.\d{3} \(ideal 2\)", out), out
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


def test_the_gpu_benchmark_finds_each_cards_own_bf16_peak_by_its_name():
    import importlib.util
    spec = importlib.util.spec_from_file_location("gpu_benchmark", ROOT / "benchmarks/gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    # torch.cuda.get_device_name's spellings; a shorter name must not take a longer one's peak
    assert gpu.peak_bf16("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu.peak_bf16("NVIDIA H100 PCIe") == 756.0
    assert gpu.peak_bf16("NVIDIA H200") == 989.0
    assert gpu.peak_bf16("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu.peak_bf16("NVIDIA L40S") == 362.0 and gpu.peak_bf16("NVIDIA L4") == 121.0
    assert gpu.peak_bf16("NVIDIA A10") == 125.0
    assert gpu.peak_bf16("NVIDIA A10G") is None  # no published figure: no made-up fraction
    assert gpu.peak_bf16("Tesla T4") is None
