"""examples/preprocess_slurm.sh: its array tasks and merge step, run for real, equal one preprocess_data run."""

import os
import shlex
import subprocess
import sys

from tests.conftest import REPO, write_jsonl
from tests.packing.test_preprocess import run_tool, same_dataset
from tools import merge_datasets, preprocess_data

SCRIPT = os.path.join(REPO, "examples", "preprocess_slurm.sh")


def script(*argv, **env):
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=REPO, **env)
    out = subprocess.run(["bash", SCRIPT, *map(str, argv)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_dry_run_prints_commands_the_tools_parse(tmp_path):
    flags = ["--tokenizer-type", "MistralTokenizer", "--tokenizer-model", "m.model", "--append-eod"]
    env = {"DRY_RUN": "1", "SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_MIN": "2", "SLURM_ARRAY_TASK_COUNT": "16"}
    (cmd,) = [shlex.split(line) for line in script("/data/in", "/data/out", *flags, **env).splitlines()]
    assert cmd[1].endswith("tools/preprocess_data.py")
    a = preprocess_data.parse_args(cmd[2:])
    assert (a.num_shards, a.shard_index, a.output_prefix, a.append_eod) == (16, 7, "/data/out/parts/part-00007", True)
    merge = [shlex.split(line) for line in script("--merge", "/data/out", DRY_RUN="1", JSON_KEYS="text").splitlines()]
    m = merge_datasets.parse_args(merge[-1][2:])
    assert (m.input, m.output_prefix) == ("/data/out/parts/by_key/text", "/data/out/corpus_text_document")


def test_array_tasks_then_merge_equal_one_run(tmp_path, mistral_model, real_texts):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t, "title": t[:40]} for t in real_texts])
    flags = ["--tokenizer-type", "MistralTokenizer", "--tokenizer-model", mistral_model, "--append-eod"]
    keys = {"JSON_KEYS": "text title", "WORKERS": "1"}
    for task in range(3):
        script(path, tmp_path / "out", *flags, SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_COUNT="3", **keys)
    script("--merge", tmp_path / "out", **keys)
    one = run_tool("--input", path, "--output-prefix", tmp_path / "one", "--json-keys", "text", "title", *flags)
    assert one.returncode == 0, one.stderr
    for key in ("text", "title"):
        assert same_dataset(f"{tmp_path}/one_{key}_document", f"{tmp_path}/out/corpus_{key}_document")
