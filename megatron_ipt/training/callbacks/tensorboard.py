"""TensorBoard scalars under Megatron-LM's names, each with its `<name> vs samples` twin when Megatron writes one, and
text (the run's arguments, one tag each, as Megatron-LM writes them)."""

from __future__ import annotations


class TensorBoardWriter:
    def __init__(self, log_dir: str):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=log_dir, max_queue=1000)

    def scalar(self, name: str, value: float, iteration: int, samples: int = None) -> None:
        self._writer.add_scalar(name, value, iteration)
        if samples is not None:
            self._writer.add_scalar(name + " vs samples", value, samples)

    def text(self, name: str, text: str, iteration: int) -> None:
        self._writer.add_text(name, text, iteration)

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()
