"""Every launch script's flags parse with tools/pretrain.py's parser (scripts print their flags with DRY_RUN=1)."""

import os
import subprocess

import pytest

from tests.training.helpers import training_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = {
    "pretrain_instructlm_500m.sh": [
        "/ck",
        "/tb",
        "/tok.model",
        "0.3",
        "/d/a_text_document",
        "0.7",
        "/d/b_text_document",
    ],
    "pretrain_instructlm_1b.sh": ["/ck", "/tb", "/tok.model", "/d/a_text_document"],
    "continual_llama3_8b_fp8.sh": ["/ck", "/tb", "/llama3", "/base", "/d/fin_text_document"],
}


def dry_run(script, argv, extra_env=None):
    env = dict(os.environ, DRY_RUN="1", **(extra_env or {}))
    out = subprocess.run(
        ["bash", os.path.join(REPO, "examples", script), *argv], env=env, capture_output=True, text=True, check=True
    ).stdout
    return out.splitlines()


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_flags_parse(script):
    cfg = training_config(dry_run(script, SCRIPTS[script]))
    assert cfg.checkpoint.save == "/ck" and cfg.logging.tensorboard_dir == "/tb"
    assert cfg.data.data_path == tuple(SCRIPTS[script][4 if script.startswith("continual") else 3 :])


def test_continual_llama3_is_the_paper_budget():
    cfg = training_config(dry_run("continual_llama3_8b_fp8.sh", SCRIPTS["continual_llama3_8b_fp8.sh"]))
    o, p = cfg.optimizer, cfg.parallel
    assert o.train_iters * o.global_batch_size * cfg.model.seq_length == 4000 * 64 * 4096  # ~1.05B tokens
    assert o.global_batch_size * cfg.model.seq_length == 262144  # 0.25M tokens per step
    assert (cfg.precision.fp8_format, p.tensor_model_parallel_size, p.use_distributed_optimizer) == ("hybrid", 2, True)
    assert cfg.checkpoint.load == "/base" and cfg.checkpoint.no_load_optim  # a fresh run starts from the base model


def test_slurm_wrapper_passes_through():
    lines = dry_run(
        "pretrain_slurm.sh",
        ["examples/pretrain_instructlm_1b.sh", *SCRIPTS["pretrain_instructlm_1b.sh"]],
        {"SLURM_NNODES": "4"},
    )
    assert training_config(lines).model.source == "instructlm-1.3b"
