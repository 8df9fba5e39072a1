"""Weights & Biases, as Megatron-LM's --wandb-project/--wandb-exp-name/--wandb-save-dir: the same scalars as TensorBoard,
from the last rank. Offline runs (WANDB_MODE=offline) write into the save directory and sync later."""

from __future__ import annotations

import dataclasses
import os


class WandbWriter:
    def __init__(self, run):
        self._run = run

    @classmethod
    def from_config(cls, config):
        """A writer for the TrainingConfig's --wandb-* flags; None without --wandb-project."""
        log = config.logging
        if not log.wandb_project:
            return None
        import wandb

        save_dir = log.wandb_save_dir or os.path.join(config.checkpoint.save or ".", "wandb")
        os.makedirs(save_dir, exist_ok=True)
        run = wandb.init(
            project=log.wandb_project,
            name=log.wandb_exp_name or None,
            dir=save_dir,
            config=_flat(dataclasses.asdict(config)),
        )
        return cls(run)

    def scalar(self, name: str, value: float, iteration: int) -> None:
        self._run.log({name: value}, step=iteration)

    def close(self) -> None:
        self._run.finish()


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
    return flat
