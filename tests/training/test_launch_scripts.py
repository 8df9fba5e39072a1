"""Every launch script's flags parse with tools/pretrain.py's parser (scripts print their flags with DRY_RUN=1)."""

import os
import subprocess

import pytest

from megatron_ipt.training import config

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
    args = config.parse_args(dry_run(script, SCRIPTS[script]))
    assert args.save == "/ck" and args.tensorboard_dir == "/tb"
    assert args.data_path == SCRIPTS[script][4 if script.startswith("continual") else 3 :]


def test_continual_llama3_is_the_paper_budget():
    args = config.parse_args(dry_run("continual_llama3_8b_fp8.sh", SCRIPTS["continual_llama3_8b_fp8.sh"]))
    assert args.train_iters * args.global_batch_size * args.seq_length == 4000 * 64 * 4096  # ~1.05B tokens
    assert args.global_batch_size * args.seq_length == 262144  # 0.25M tokens per step
    assert (args.fp8_format, args.tensor_model_parallel_size, args.use_distributed_optimizer) == ("hybrid", 2, True)
    assert args.load == "/base" and args.no_load_optim  # a fresh run starts from the base model


def test_slurm_wrapper_passes_through():
    lines = dry_run(
        "pretrain_slurm.sh",
        ["examples/pretrain_instructlm_1b.sh", *SCRIPTS["pretrain_instructlm_1b.sh"]],
        {"SLURM_NNODES": "4"},
    )
    assert config.parse_args(lines).model == "instructlm-1.3b"
