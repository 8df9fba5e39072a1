"""The GPU check (examples/gpu_check.sh, docs/development.md#checking-a-gpu-machine) as far as it runs without CUDA: the wheel plan for what
does not import, the GPU peak table, and the whole check as a CPU dry run (cuda tests skipped, tiny benchmark)."""

import json
import os
import subprocess

import pytest

from megatron_ipt.training.callbacks.throughput import peak_bf16_tflops
from tests.conftest import REPO
from tools.dev import gpu_check


def test_missing_modules_come_from_wheels_or_are_named(tmp_path):
    missing = [entry for entry in gpu_check.FROM_WHEELS if entry[0] in ("megatron.core", "orjson")]
    with pytest.raises(gpu_check.CheckError, match=r"megatron.core \(megatron-core==0.16.1: .*Give WHEELS=DIR"):
        gpu_check.plan_install(missing, None)
    (tmp_path / "orjson-3.13.0-cp312-cp312-manylinux_2_17_x86_64.whl").write_bytes(b"")
    (tmp_path / "megatron_core-0.15.0-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"")  # another version
    with pytest.raises(gpu_check.CheckError, match=r"has no wheel for megatron-core==0.16.1 \(module megatron.core"):
        gpu_check.plan_install(missing, str(tmp_path))
    (tmp_path / "megatron_core-0.16.1-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"")
    assert [os.path.basename(f) for f in gpu_check.plan_install(missing, str(tmp_path))] == [
        "megatron_core-0.16.1-cp312-cp312-manylinux_2_28_x86_64.whl",
        "orjson-3.13.0-cp312-cp312-manylinux_2_17_x86_64.whl",
    ]
    assert gpu_check.plan_install([], None) == []


def test_peak_is_read_from_the_gpu_name():
    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0  # SXM
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("NVIDIA H200") == 989.0
    assert peak_bf16_tflops("NVIDIA A100-SXM4-80GB") is None  # not in the table: MFU n/a


@pytest.mark.slow  # ~40 s on 2 cores: the cuda tests' collection and two tiny training runs
def test_dry_run_of_the_whole_check(tmp_path):
    out = tmp_path / "gpu_check" / "summary.json"
    env = dict(os.environ, DRY_RUN="1", OUT=str(out), PYTHON=__import__("sys").executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        ["bash", "examples/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "GPU check summary" in proc.stdout and "DRY RUN on CPU (no CUDA run)" in proc.stdout
    summary = json.loads(out.read_text())
    steps = summary["steps"]
    assert summary["passed"] and summary["dry_run"] and list(steps) == ["install", "cuda_tests", "throughput"]
    assert all(step["status"] == "ok" and step["seconds"] > 0 for step in steps.values())
    tests = steps["cuda_tests"]
    assert tests["tests"] == tests["skipped"] >= 18 and tests["failures"] == tests["errors"] == 0  # all skip on CPU
    bench = steps["throughput"]
    assert (bench["model"], bench["spec"], bench["mfu"], bench["dry_run"]) == ("tiny", "local", None, True)
    assert bench["tokens_per_sec_per_gpu"] > 0 and bench["ratio_vs_bare"] > 0 and bench["mfu_na_reason"]
    assert summary["environment"]["megatron-core"] == "0.16.1"
    assert (out.parent / "cuda_tests.xml").exists() and (out.parent / "throughput.log").exists()
