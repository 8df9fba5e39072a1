"""--log-progress: Megatron-LM's `progress.txt` in --save, one tab-separated line per event, appended by global rank 0:

    2026-12-06 21:40:00\tJob ID: 123\t# GPUs: 8\tStarting job
    2026-12-06 22:10:00\tJob ID: 123\t# GPUs: 8\tSaved checkpoint\tIteration: 2000\tJob throughput: 410.2 TFLOP/s/GPU\t
        Cumulative throughput: 398.7 TFLOP/s/GPU\tFloating-point operations: 1.23e+20\tTokens (in billions): 4.19

"Starting job" when a job starts, "Saved checkpoint" after each committed save (Megatron-LM writes nothing at the
job's end). Job throughput counts this job's floating-point operations over the time since it started; cumulative
throughput those since the earliest "Starting job" line of the latest unbroken run of lines with this world size (a
job at another world size starts the count afresh), over the time since that line, as Megatron-LM's
`get_start_time_from_progress_log` reads the file. The Job ID is $SLURM_JOB_ID (empty outside Slurm)."""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Optional, Tuple

import torch

FILE = "progress.txt"
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class ProgressLog:
    def __init__(self, save_dir: str, world_size: int, job_start: float):
        """`job_start`: time.time() when this job began (before the model was built: start-up counts, as in
        Megatron-LM)."""
        self.path = os.path.join(save_dir, FILE)
        self.world_size = world_size
        self.job_start = job_start
        self.job_flops_start = 0.0

    def start(self) -> None:
        self._append("Starting job")

    def resumed(self, flops_so_far: float) -> None:
        """The floating-point operations done before this job (the loaded checkpoint's)."""
        self.job_flops_start = flops_so_far

    def saved(self, iteration: int, flops_so_far: float, consumed_samples: int, seq_length: int) -> None:
        """After a committed checkpoint save: this job's and the cumulative throughput, the FLOPs and tokens so far."""
        if torch.distributed.get_rank() != 0:
            return
        scale = 1e12 * self.world_size
        job = (flops_so_far - self.job_flops_start) / (max(time.time() - self.job_start, 1e-6) * scale)
        start_time, start_flops = cumulative_start(self.path, self.world_size)
        elapsed = (datetime.now() - start_time).total_seconds() if start_time else 0.0
        cumulative = (flops_so_far - start_flops) / (max(elapsed, 1e-6) * scale)
        tokens = consumed_samples * seq_length
        self._append(
            f"Saved checkpoint\tIteration: {iteration}\t"
            f"Job throughput: {job:.1f} TFLOP/s/GPU\t"
            f"Cumulative throughput: {cumulative:.1f} TFLOP/s/GPU\t"
            f"Floating-point operations: {flops_so_far:.2e}\t"
            f"Tokens (in billions): {tokens / 1e9:.2f}"
        )

    def _append(self, text: str) -> None:
        if torch.distributed.get_rank() != 0:
            return
        stamp = datetime.now().strftime(_TIME_FORMAT)
        line = f"{stamp}\tJob ID: {os.environ.get('SLURM_JOB_ID', '')}\t# GPUs: {self.world_size}\t{text}\n"
        with open(self.path, "a", encoding="utf-8") as f:  # one write of one line: appended whole or not at all
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def cumulative_start(path: str, world_size: int) -> Tuple[Optional[datetime], float]:
    """(time, floating-point operations of the last checkpoint saved before it) of the earliest "Starting job" line
    with `world_size` since the last line of another world size; (None, 0) if there is none. A line that does not
    parse (a torn write of a killed job) is passed over."""
    start_time, start_flops, latest_flops = None, 0.0, 0.0
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            try:
                stamp = datetime.strptime(fields[0], _TIME_FORMAT)
                world = int(fields[2].split(": ", 1)[1])
                event = fields[3]
                if event == "Saved checkpoint":
                    latest_flops = float(fields[7].split(": ", 1)[1])
            except (IndexError, ValueError):
                continue
            if world != world_size:
                start_time, start_flops = None, 0.0
            elif event == "Starting job" and start_time is None:
                start_time, start_flops = stamp, latest_flops
    return start_time, start_flops
