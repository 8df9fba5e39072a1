"""examples/continual_llama3_8b_fp8.sh picks its base: a HF directory is converted once (into BASE-megatron), and a
converted checkpoint's model.json gives the model shape (DRY_RUN prints the flags instead of running)."""

import json
import os
import subprocess

from megatron_ipt.training import config
from tests.conftest import REPO
from tests.training.helpers import training_config

SCRIPT = os.path.join(REPO, "examples", "continual_llama3_8b_fp8.sh")


def flags(base):
    out = subprocess.run(
        ["bash", SCRIPT, "/ck", "/tb", "/tok", str(base), "/d/fin_text_document"],
        check=True,
        env=dict(os.environ, DRY_RUN="1"),
        capture_output=True,
        text=True,
    ).stdout
    return training_config(out.splitlines())


def test_hf_directory_base_loads_its_conversion(tmp_path):
    hf = tmp_path / "Meta-Llama-3-8B"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    cfg = flags(hf)
    assert cfg.checkpoint.load == f"{hf}-megatron" and cfg.checkpoint.no_load_optim and cfg.model.source == "llama3-8b"


def test_converted_base_brings_its_model_file(tmp_path):
    base = tmp_path / "llama31-megatron"
    base.mkdir()
    fields = {
        **config.ModelConfig.load("llama3-8b").model_fields(),
        "use_rope_scaling": True,
        "make_vocab_size_divisible_by": 1,
    }
    (base / "model.json").write_text(json.dumps(fields))
    cfg = flags(base)
    assert cfg.model.source == str(base / "model.json") and cfg.checkpoint.load == str(base)
    assert cfg.model.use_rope_scaling and (cfg.model.hidden_size, cfg.model.seq_length) == (4096, 4096)
