"""The GPU check (examples/gpu_check.sh, `make gpu-check`; docs/development.md#checking-a-gpu-machine): proves the
CUDA face of this checkout on one machine, with the Python that is installed and no network, in three timed steps,
then prints one summary block and writes it as JSON to $OUT (default runs/gpu_check/summary.json; the steps' logs go
beside it):

1. install: every module the package and the tests need must import; the missing ones are installed from the wheel
   directory $WHEELS (`pip install --no-index --no-deps` of the pinned wheel files), and the native extension is
   built in place (`setup.py build_ext --inplace`, with pybind11) unless it already imports. Nothing else is installed.
2. cuda tests: `pytest -m cuda` over the CUDA test files (training resume bit-exact, HF -> ours logits, evaluation,
   the hf synthesis engine), counted from pytest's JUnit XML.
3. throughput: benchmarks/gpu_throughput.py (instructlm-1.3b, seq 4096, BF16; instructlm-500m if that does not fit).

DRY_RUN=1 (or DEVICE=cpu) runs the same steps without a GPU: CUDA hidden, the cuda tests skip, and the benchmark
makes its --dry-run (tiny preset on CPU). Only the standard library is imported here: step 1 must run first.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Missing on the machines this targets (torch, transformers & co. preinstalled): (module, pinned requirement, why).
# The pins are the versions the CPU environment (.venv) tests with; the pip download command in
# docs/development.md#checking-a-gpu-machine fetches exactly these.
FROM_WHEELS = (
    ("megatron.core", "megatron-core==0.16.1", "the model, schedules, optimizer and checkpoints"),
    ("orjson", "orjson==3.13.0", "JSONL parsing"),
    ("zstandard", "zstandard==0.25.0", ".zst inputs"),
    ("mistral_common", "mistral-common==1.13.1", "data only: the Mistral tokenizer the training tests use"),
    ("tvm_ffi", "apache-tvm-ffi==0.1.15.post2", "data only: Newton's Opticks, the training tests' text"),
)
BUILD_REQUIREMENT = ("pybind11", "pybind11==3.1.0", "builds the native extension (csrc/)")
# Expected on the machine already: never installed here, only named when missing.
PREINSTALLED = (
    "torch",
    "numpy",
    "sentencepiece",
    "tokenizers",
    "tensorboard",
    "tqdm",
    "tiktoken",
    "psutil",
    "safetensors",
    "transformers",
    "pytest",
    "setuptools",
)
CUDA_TESTS = (
    "tests/training/test_cuda.py",
    "tests/convert/test_cuda.py",
    "tests/evaluation/test_cuda.py",
    "tests/synthesis/test_hf_cuda.py",
)
# Seconds each step may take (an H100 needs about half); the whole check stops at TOTAL_BUDGET.
BUDGET = {"install": 150, "cuda_tests": 300, "throughput": 180}
TOTAL_BUDGET = 570
BENCHMARK_MODELS = ("instructlm-1.3b", "instructlm-500m")  # the largest first; the next if it does not fit
OUT_OF_MEMORY = 3  # benchmarks/gpu_throughput.py's exit status when the model does not fit


class CheckError(Exception):
    """A step cannot go on; the message says why in one line."""


def wheel_file(wheels: str, requirement: str):
    """The wheel for `name==version` in the directory `wheels`, or None."""
    name, version = requirement.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(glob.glob(os.path.join(wheels, pattern))) if wheels else []
    return found[0] if found else None


def plan_install(missing: list, wheels) -> list:
    """The wheel files that install the `missing` (module, requirement, why) entries, or a CheckError naming every
    one that $WHEELS cannot supply."""
    if not missing:
        return []
    if not wheels:
        raise CheckError(
            "not importable here: "
            + "; ".join(f"{module} ({requirement}: {why})" for module, requirement, why in missing)
            + ". Give WHEELS=DIR holding their wheels (pip download: docs/development.md#checking-a-gpu-machine)"
        )
    if not os.path.isdir(wheels):
        raise CheckError(f"WHEELS={wheels}: not a directory")
    lacking = [(module, requirement) for module, requirement, _ in missing if not wheel_file(wheels, requirement)]
    if lacking:
        raise CheckError(
            f"WHEELS={wheels} has no wheel for "
            + ", ".join(f"{requirement} (module {module} is not importable)" for module, requirement in lacking)
            + "; fill it with the pip download command in docs/development.md#checking-a-gpu-machine"
        )
    return [wheel_file(wheels, requirement) for _, requirement, _ in missing]


def importable(python: str, modules, env=None) -> dict:
    """{module: bool} as `python` sees it (a fresh interpreter: after an install, this one's caches are stale)."""
    code = (
        "import importlib.util, json, sys\n"
        "def ok(m):\n"
        "    try:\n"
        "        return importlib.util.find_spec(m) is not None\n"
        "    except Exception:\n"
        "        return False\n"
        "print(json.dumps({m: ok(m) for m in sys.argv[1:]}))"
    )
    out = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    return json.loads(out.stdout)


class Step:
    """One timed step: its status ('ok', 'failed', 'skipped'), seconds, figures and log file."""

    def __init__(self, name: str, log_dir: str):
        self.name, self.status, self.seconds, self.detail = name, "skipped", 0.0, {}
        self.log = os.path.join(log_dir, f"{name}.log")

    def as_dict(self) -> dict:
        return {"status": self.status, "seconds": round(self.seconds, 1), "log": self.log, **self.detail}


def stream(command, log_path: str, env: dict, timeout: float, quiet=lambda line: False) -> int:
    """Run `command` in the repo, its output into `log_path` and onto the console (less the lines `quiet` drops);
    the exit status, or 124 when it ran past `timeout` seconds (then it is killed, with its process group)."""
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        hidden = False
        import selectors

        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            if time.monotonic() > deadline:
                os.killpg(proc.pid, 9)
                proc.wait()
                message = f"[gpu_check] stopped after {timeout:.0f} s (its time budget)\n"
                log.write(message)
                print(message, end="", flush=True)
                return 124
            if not selector.select(timeout=1.0):
                continue
            line = proc.stdout.readline()
            if not line:
                break
            log.write(line)
            # the training loop's start-up "arguments" block is long: it stays in the log
            if "------------------------ arguments" in line:
                hidden = True
            if not hidden and not quiet(line):
                print(line, end="", flush=True)
            if "end of arguments" in line:
                hidden = False
        return proc.wait()


def step_install(step: Step, python: str, env: dict, wheels, timeout: float) -> None:
    wanted = [m for m, _, _ in FROM_WHEELS] + [BUILD_REQUIREMENT[0], *PREINSTALLED]
    found = importable(python, wanted, env)
    absent = [m for m in PREINSTALLED if not found[m]]
    if absent:
        raise CheckError(f"not importable here: {', '.join(absent)} (expected preinstalled with torch; install them)")
    native = importable(python, ["megatron_ipt._native"], env)["megatron_ipt._native"]
    missing = [entry for entry in FROM_WHEELS if not found[entry[0]]]
    if not native and not found[BUILD_REQUIREMENT[0]]:
        missing.append(BUILD_REQUIREMENT)
    files = plan_install(missing, wheels)
    if files:
        rc = stream([python, "-m", "pip", "install", "--no-index", "--no-deps", *files], step.log, env, timeout)
        if rc:
            raise CheckError(f"pip install from WHEELS={wheels} failed (exit {rc}); see {step.log}")
        still = [m for m, ok in importable(python, [m for m, _, _ in missing], env).items() if not ok]
        if still:
            raise CheckError(f"installed from WHEELS but still not importable: {', '.join(still)}")
    step.detail["installed"] = [requirement for _, requirement, _ in missing]
    if not native:
        rc = stream(
            [python, "setup.py", "build_ext", "--inplace", "-j", "8"], step.log, env, timeout, quiet=lambda line: True
        )
        if rc or not importable(python, ["megatron_ipt._native"], env)["megatron_ipt._native"]:
            raise CheckError(f"building the native extension failed (exit {rc}); see {step.log}")
    step.detail["native_extension"] = "built in place" if not native else "already importable"


def versions(python: str, env: dict) -> dict:
    code = r"""
import json, platform
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
from importlib import metadata
for name in ("megatron-core", "transformer-engine", "transformers"):
    try:
        info[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        info[name] = None
try:
    import transformer_engine  # noqa: F401
    info["transformer_engine_imports"] = True
except Exception as error:
    info["transformer_engine_imports"] = False
print(json.dumps(info))
"""
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    return json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr.strip().splitlines()[-1:]}


def step_cuda_tests(step: Step, python: str, env: dict, timeout: float) -> None:
    xml = os.path.splitext(step.log)[0] + ".xml"
    command = [python, "-m", "pytest", "-m", "cuda", "-q", "-rfEs", "-p", "no:cacheprovider", f"--junitxml={xml}"]
    rc = stream(command + list(CUDA_TESTS), step.log, env, timeout)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if os.path.exists(xml):
        for suite in ElementTree.parse(xml).getroot().iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, 0))
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    step.detail.update(counts, exit_status=rc)
    if rc:
        raise CheckError(f"pytest exit {rc}: {counts['failures']} failed, {counts['errors']} errors; see {step.log}")


def step_throughput(step: Step, python: str, env: dict, dry_run: bool, deadline: float) -> None:
    result = os.path.splitext(step.log)[0] + ".json"
    models = ("tiny",) if dry_run else BENCHMARK_MODELS
    for model in models:
        command = [python, "benchmarks/gpu_throughput.py", "--json", result]
        command += ["--dry-run"] if dry_run else ["--model", model]
        quiet_env = dict(env, PYTHONWARNINGS="ignore")  # megatron-core's start-up warnings stay out of the figures
        rc = stream(command, step.log, quiet_env, min(BUDGET["throughput"], deadline - time.monotonic()))
        if rc == OUT_OF_MEMORY and model != models[-1]:
            step.detail.setdefault("did_not_fit", []).append(model)
            continue
        break
    if rc:
        raise CheckError(f"benchmarks/gpu_throughput.py exit {rc}; see {step.log}")
    with open(result) as f:
        step.detail.update(json.load(f))


def summary_lines(summary: dict) -> list:
    env, steps = summary["environment"], summary["steps"]
    gpus = env.get("gpus") or []
    te = env.get("transformer-engine") or "not installed"
    lines = [
        "=" * 24 + " GPU check summary " + "=" * 24,
        f"mode: {'DRY RUN on CPU (no CUDA run)' if summary['dry_run'] else 'CUDA'} | "
        f"GPU: {', '.join(gpus) if gpus else 'none visible'}",
        f"python {env.get('python')} | torch {env.get('torch')} (CUDA {env.get('cuda')}) | megatron-core "
        f"{env.get('megatron-core')} | Transformer Engine {te} | transformers {env.get('transformers')}",
    ]
    for name, step in steps.items():
        extra = ""
        if name == "install" and step["status"] == "ok":
            extra = (
                f"installed: {', '.join(step['installed']) or 'nothing'}; native extension {step['native_extension']}"
            )
        elif name == "cuda_tests" and "tests" in step:
            extra = (
                f"{step['tests']} tests: {step['passed']} passed, {step['failures']} failed, {step['errors']} errors, "
                f"{step['skipped']} skipped"
            )
        elif name == "throughput" and "tokens_per_sec_per_gpu" in step:
            mfu = f"{100 * step['mfu']:.1f}%" if step.get("mfu") is not None else f"n/a ({step['mfu_na_reason']})"
            extra = (
                f"{step['model']}, seq {step['seq_length']}, spec {step['spec']}: "
                f"{step['tokens_per_sec_per_gpu']:.0f} tokens/s/GPU, {step['tflops_per_gpu']:.1f} TFLOP/s/GPU, "
                f"MFU {mfu}, step time ours/bare megatron-core {step['ratio_vs_bare']:.3f}x"
            )
        if step.get("error"):
            extra = step["error"]
        lines.append(f"{name:<11} {step['status']:<8} {step['seconds']:7.1f} s  {extra}")
    lines.append(f"total {summary['seconds']:.1f} s; {'PASSED' if summary['passed'] else 'FAILED'}")
    return lines


def main() -> int:
    python = os.environ.get("PYTHON") or sys.executable
    dry_run = os.environ.get("DRY_RUN", "") not in ("", "0") or os.environ.get("DEVICE") == "cpu"
    out = os.path.abspath(os.environ.get("OUT") or os.path.join(REPO, "runs", "gpu_check", "summary.json"))
    wheels = os.environ.get("WHEELS") or None
    log_dir = os.path.dirname(out)
    os.makedirs(log_dir, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    env.pop("IPT_CUDA_TESTS_ON_CPU", None)  # the cuda tests run on CUDA or skip, never on the CPU backend here
    if dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""
    start = time.monotonic()
    deadline = start + TOTAL_BUDGET
    steps = {name: Step(name, log_dir) for name in BUDGET}
    for step in steps.values():
        if os.path.exists(step.log):
            os.remove(step.log)
    summary = {"dry_run": dry_run, "machine": platform.node(), "environment": {}}
    for name, step in steps.items():
        print(f"[gpu_check] step {name} (budget {BUDGET[name]} s)", flush=True)
        began = time.monotonic()
        try:
            if steps["install"].status == "failed":
                raise CheckError("not run: the install step failed")
            budget = min(BUDGET[name], deadline - began)
            if budget <= 0:
                raise CheckError(f"not run: the check's {TOTAL_BUDGET} s were spent")
            if name == "install":
                step_install(step, python, env, wheels, budget)
                summary["environment"] = versions(python, env)
            elif name == "cuda_tests":
                step_cuda_tests(step, python, env, budget)
            else:
                step_throughput(step, python, env, dry_run, deadline)
            step.status = "ok"
        except CheckError as error:
            step.status, step.detail["error"] = "failed", str(error)
            print(f"[gpu_check] {name}: {error}", flush=True)
        step.seconds = time.monotonic() - began
    if not summary["environment"]:
        summary["environment"] = versions(python, env)
    summary["steps"] = {name: step.as_dict() for name, step in steps.items()}
    summary["seconds"] = round(time.monotonic() - start, 1)
    summary["passed"] = all(step.status == "ok" for step in steps.values())
    print("\n".join(summary_lines(summary)), flush=True)
    with open(out + ".tmp", "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(out + ".tmp", out)
    print(f"summary written to {out}", flush=True)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
