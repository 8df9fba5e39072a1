"""The synthesis launch scripts' commands parse with tools/synthesize.py's parser (DRY_RUN=1 prints them)."""

import os
import shlex
import subprocess

from tools.synthesize import build_parser

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dry_run(script, argv, env):
    out = subprocess.run(
        ["bash", os.path.join(REPO, "examples", script), *argv],
        env=dict(os.environ, DRY_RUN="1", **env),
        capture_output=True,
        text=True,
        check=True,
    )
    return [shlex.split(line) for line in out.stdout.splitlines()]


def synthesize_args(cmd):
    assert cmd[0] == "python" and cmd[1].endswith("tools/synthesize.py")
    return build_parser().parse_args(cmd[2:])


def test_slurm_array_task_is_one_shard():
    cmds = dry_run(
        "synthesize_slurm.sh",
        ["/data/raw", "/data/out", "--part-size", "500"],
        {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "2", "SLURM_ARRAY_TASK_COUNT": "16", "TP": "2"},
    )
    assert len(cmds) == 1
    a = synthesize_args(cmds[0])
    assert (a.engine, a.model, a.rounds, a.max_model_len, a.max_new_tokens, a.temperature) == (
        "vllm",
        "instruction-pretrain/instruction-synthesizer",
        2,
        4096,
        400,
        0.0,
    )
    assert (a.num_shards, a.shard_index, a.tensor_parallel_size, a.resume, a.part_size) == (16, 5, 2, True, 500)
    assert (a.input, a.output_dir) == ("/data/raw", "/data/out")


def test_serve_script_starts_replicas_and_points_the_client_at_them():
    cmds = dry_run("synthesize_vllm_serve.sh", ["/in", "/out"], {"GPUS": "4", "TP": "2", "BASE_PORT": "9000"})
    serves, client = cmds[:-1], cmds[-1]
    assert [c[:3] for c in serves] == [
        ["CUDA_VISIBLE_DEVICES=0,1", "vllm", "serve"],
        ["CUDA_VISIBLE_DEVICES=2,3", "vllm", "serve"],
    ]
    ports = [c[c.index("--port") + 1] for c in serves]
    assert ports == ["9000", "9001"]
    a = synthesize_args(client)
    assert a.engine == "openai" and a.model == "synthesizer" and a.max_concurrency == 128 and a.resume
    assert a.base_url == ["http://127.0.0.1:9000/v1,http://127.0.0.1:9001/v1"]


def test_serve_script_uses_running_servers():
    cmds = dry_run("synthesize_vllm_serve.sh", ["/in", "/out"], {"SERVER_URLS": "http://n1:8000/v1,http://n2:8000/v1"})
    assert len(cmds) == 1
    assert synthesize_args(cmds[0]).base_url == ["http://n1:8000/v1,http://n2:8000/v1"]
