"""Early exit, as Megatron-LM's --exit-signal-handler, --exit-duration-in-mins, --exit-interval and
--phase-transition-iterations: after each step the loop asks `ExitCondition.reason`, and on an answer saves a checkpoint
and stops (exit status 0).

A SIGTERM (what Slurm sends every process of a job before its time limit, and what torchrun forwards to its ranks)
only sets a flag: the step under way finishes. The flag and the elapsed time are combined over all ranks with one
all-reduce (MAX) per step, so every rank stops after the same step and none waits in a collective for a rank that
has left; a signal that reaches only some ranks stops them all. Slurm and torchrun signal whole process groups, so
the checkpoint writer's helper process gets the SIGTERM too: `shield_checkpoint_writer` keeps it alive for the save.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
import time
from multiprocessing.managers import SyncManager
from typing import Optional, Tuple

import torch


class ExitCondition:
    def __init__(
        self,
        exit_signal_handler: bool,
        exit_duration_in_mins: Optional[int],
        exit_interval: Optional[int],
        phase_transitions: Tuple[int, ...] = (),
    ):
        self.duration = exit_duration_in_mins
        self.interval = exit_interval
        self.transitions = phase_transitions
        self.start = time.monotonic()
        self.signalled = False
        self.previous = None
        if exit_signal_handler:
            self.previous = signal.signal(signal.SIGTERM, self._on_signal)
            shield_checkpoint_writer()

    def _on_signal(self, signum, frame) -> None:
        self.signalled = True

    def reason(self, iteration: int) -> Optional[str]:
        """Why to stop after this iteration (Megatron-LM's wording), or None; the same answer on every rank."""
        if self.previous is not None or self.duration is not None:
            minutes = (time.monotonic() - self.start) / 60
            flags = torch.tensor(
                [float(self.signalled), float(self.duration is not None and minutes > self.duration)],
                device="cuda" if torch.cuda.is_available() else "cpu",
            )
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            if flags[0].item():
                return "exiting program after receiving SIGTERM"
            if flags[1].item():
                return f"exiting program after {self.duration} minutes (--exit-duration-in-mins)"
        if self.interval and iteration % self.interval == 0:
            return f"exiting program at iteration {iteration} (--exit-interval {self.interval})"
        if iteration in self.transitions:
            phase = self.transitions.index(iteration) + 1
            return (
                f"exiting program at iteration {iteration} (--phase-transition-iterations: phase {phase} of "
                f"{len(self.transitions) + 1} ends here; resume with --load and the next phase's --data-path)"
            )
        return None

    def close(self) -> None:
        """Put back the SIGTERM handler that was there before."""
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None


_writer_manager = None


def shield_checkpoint_writer() -> None:
    """dist_checkpointing's writer (0.16.1 to 0.19) collects its results through one long-lived process of its own,
    a multiprocessing Manager spawned at the first save. A SIGTERM sent to the process group (torchrun forwards it
    with killpg; Slurm signals every process of the job) kills that Manager, and every later save, the one before
    exiting included, fails. Start it here instead, ignoring SIGTERM and bound to its rank's life."""
    global _writer_manager
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if getattr(filesystem_async, "_results_queue", "absent") is not None:  # already started, or not that writer
        return
    _writer_manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
    _writer_manager.start(initializer=_ignore_sigterm)
    filesystem_async._results_queue = _writer_manager.Queue()


def _ignore_sigterm() -> None:
    """Runs in the Manager process: ignore SIGTERM, and (Linux) die with the rank that started it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
