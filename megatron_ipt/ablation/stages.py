"""Running an ablation's stages: one at a time, each as the user would run its tool, resumable under kill -9.

A stage is finished when, and only when, its marker `RUN/stages/<stage>.json` exists: the marker is written
atomically after the stage's command exited 0 and its outputs were checked, so a killed stage has no marker and
is run again. A stage whose tool does not resume by itself starts from an empty output (its earlier, unfinished
outputs are removed first); one that does (synthesize --resume, pretrain from its own --save) is rerun as it is
and continues. Each stage's output goes to `RUN/logs/<stage>.log` (appended, one header per attempt); a stage that
fails stops the ablation with one line naming it and its log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

from megatron_ipt.errors import UserError
from megatron_ipt.io.atomic import pid_alive, remove_path, write_json_atomic
from megatron_ipt.io.cli import format_seconds
from megatron_ipt.process import die_with_parent

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class StageFailed(UserError, RuntimeError):
    """One line: which stage failed, its exit status, the last error line of its log and the log's path."""


@dataclass
class Stage:
    name: str  # e.g. "train/ipt/seed1": also the marker's and the log's file name (with / as -)
    kind: str  # what it does (synthesize, corpus, pack, tasks, convert, train, eval, report): ETA per kind
    # argv of the tool to run (built when the stage starts: it may depend on what earlier stages left), or a
    # Python callable for the small steps done in-process (it writes its own outputs atomically)
    action: Union[Callable[[], List[str]], Callable[[], None]]
    in_process: bool = False
    outputs: List[str] = field(default_factory=list)  # removed before a fresh attempt unless `resumes`
    resumes: bool = False  # the tool continues an interrupted run itself
    check: Optional[Callable[[], dict]] = None  # after success: verifies outputs, returns facts for the marker
    env: Dict[str, str] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        return self.name.replace("/", "-")


class RunLock:
    """One ablation per run directory: a second one is refused while the first is alive."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, "ablate.lock")

    def __enter__(self):
        if os.path.exists(self.path):
            try:
                with open(self.path) as f:
                    pid = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pid = None
            if pid and pid != os.getpid() and pid_alive(pid):
                raise StageFailed(f"{os.path.dirname(self.path)}: another ablation (pid {pid}) is running in it")
        write_json_atomic(self.path, os.getpid())
        return self

    def __exit__(self, *exc):
        try:
            os.remove(self.path)
        except OSError:
            pass


def marker_path(run_dir: str, stage: Stage) -> str:
    return os.path.join(run_dir, "stages", stage.file_name + ".json")


def log_path(run_dir: str, stage: Stage) -> str:
    return os.path.join(run_dir, "logs", stage.file_name + ".log")


def read_marker(run_dir: str, stage: Stage) -> Optional[dict]:
    path = marker_path(run_dir, stage)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _last_error_line(path: str) -> str:
    """The log's last line that says what went wrong (our tools print `error: ...`), else its last line."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 65536))
            lines = [x.strip() for x in f.read().decode("utf-8", "replace").splitlines() if x.strip()]
    except OSError:
        return ""
    for line in reversed(lines):  # our tools' one line (argparse's too), not torchrun's failure block after it
        if re.search(r"(^|: )error: ", line):
            return line[:300]
    for line in reversed(lines):  # a traceback's last line: the exception
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line) and "ChildFailedError" not in line:
            return line[:300]
    return lines[-1][:300] if lines else ""


class Runner:
    def __init__(self, run_dir: str, stages: List[Stage], log: Callable[[str], None] = print):
        names = [s.name for s in stages]
        assert len(set(names)) == len(names), names
        self.run_dir, self.stages, self.log = run_dir, stages, log
        os.makedirs(os.path.join(run_dir, "stages"), exist_ok=True)
        os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)

    def _eta(self, index: int, durations: Dict[str, List[float]]) -> str:
        """Remaining time: each stage still to run at the mean duration of its kind so far (a kind not yet timed
        is left out, and said so)."""
        left, unknown = 0.0, set()
        for stage in self.stages[index + 1 :]:
            if read_marker(self.run_dir, stage) is not None:
                continue
            if durations.get(stage.kind):
                left += sum(durations[stage.kind]) / len(durations[stage.kind])
            else:
                unknown.add(stage.kind)
        text = f"ETA {format_seconds(left)}"
        return text + (f" + {', '.join(sorted(unknown))} stages not timed yet" if unknown else "")

    def run(self) -> Dict[str, dict]:
        """Run every unfinished stage in order; returns each stage's marker. Raises StageFailed."""
        durations: Dict[str, List[float]] = defaultdict(list)
        for stage in self.stages:  # finished stages (this run or an earlier one) time the ETA
            marker = read_marker(self.run_dir, stage)
            if marker is not None:
                durations[stage.kind].append(marker["seconds"])
        began = time.time()
        markers: Dict[str, dict] = {}
        total = len(self.stages)
        for index, stage in enumerate(self.stages):
            head = f"[{index + 1}/{total}] {stage.name}"
            marker = read_marker(self.run_dir, stage)
            if marker is not None:
                markers[stage.name] = marker
                self.log(f"{head}: done earlier ({format_seconds(marker['seconds'])}), kept")
                continue
            log = log_path(self.run_dir, stage)
            self.log(f"{head}: running (log {os.path.relpath(log)})")
            started = time.time()
            self._execute(stage, log)
            facts = stage.check() if stage.check else {}
            seconds = time.time() - started
            marker = {"stage": stage.name, "kind": stage.kind, "seconds": round(seconds, 3), **facts}
            write_json_atomic(marker_path(self.run_dir, stage), marker)
            markers[stage.name] = marker
            durations[stage.kind].append(seconds)
            self.log(
                f"{head}: done in {format_seconds(seconds)} | elapsed {format_seconds(time.time() - began)} | "
                + self._eta(index, durations)
            )
        return markers

    def _execute(self, stage: Stage, log: str) -> None:
        if not stage.resumes:
            for path in stage.outputs:
                remove_path(path)
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"\n===== {stage.name}: attempt at {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n")
            if stage.in_process:
                out.flush()
                try:
                    stage.action()
                except Exception as error:  # the stage's own error, recorded in its log, then one line for the user
                    import traceback

                    out.write(traceback.format_exc())
                    raise StageFailed(f"stage {stage.name} failed: {error} (log: {log})") from None
                out.write("done\n")
                return
            command = stage.action()
            out.write("$ " + " ".join(command) + "\n")
            out.flush()
            parent = os.getpid()
            env = dict(os.environ, PYTHONUNBUFFERED="1", **stage.env)
            # The tools live in the repository; the package may be installed elsewhere (editable or not).
            env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            process = subprocess.Popen(
                command,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                # kill -9 of the ablation takes its stage with it (the ranks of a torchrun stage follow theirs)
                preexec_fn=lambda: die_with_parent(signal.SIGKILL, parent=parent),
            )
            try:
                rc = process.wait()
            except BaseException:  # Ctrl-C or SIGTERM: the stage goes too, unfinished (no marker)
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise
        if rc != 0:
            reason = _last_error_line(log)
            raise StageFailed(
                f"stage {stage.name} failed (exit {rc})" + (f": {reason}" if reason else "") + f" (log: {log})"
            )


def python_tool(tool: str, *args: str) -> List[str]:
    return [sys.executable, os.path.join("tools", tool), *args]


def torchrun_tool(nproc: int, tool: str, *args: str) -> List[str]:
    # --standalone: a free rendezvous port of its own on this node (stages never share one)
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        os.path.join("tools", tool),
        *args,
    ]
