"""Fast checks of the conversion's layouts, config mapping and input errors (no model is built here)."""

import json

import pytest
import torch

from megatron_ipt.convert import hf_checkpoint, llama
from megatron_ipt.convert.llama import ConversionError
from megatron_ipt.training import config, presets
from tests.launch import run
from tests.training.helpers import training_config

LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 1000,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "rope_theta": 5000.0,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}


def labelled(prefix, heads, head_dim=1):
    """Rows named by (kind, head): tensor value 100*kind + head, one row per head (hidden size 1)."""
    return torch.tensor([[100 * prefix + h] for h in range(heads) for _ in range(head_dim)], dtype=torch.float32)


def test_fused_qkv_groups_query_heads_with_their_key_and_value():
    q, k, v = labelled(1, 6), labelled(2, 2), labelled(3, 2)  # 6 query heads, 2 groups: 3 query heads per group
    fused = llama.fuse_qkv(q, k, v, groups=2, head_dim=1).flatten().tolist()
    assert fused == [100, 101, 102, 200, 300, 103, 104, 105, 201, 301]  # [q0 q1 q2 k0 v0 | q3 q4 q5 k1 v1]
    back = llama.split_qkv(torch.tensor(fused).unsqueeze(1), groups=2, head_dim=1)
    assert all(torch.equal(a, b) for a, b in zip(back, (q, k, v)))


def test_fused_qkv_keeps_head_dim_rows_together():
    q, k, v = labelled(1, 2, head_dim=2), labelled(2, 1, head_dim=2), labelled(3, 1, head_dim=2)
    assert llama.fuse_qkv(q, k, v, groups=1, head_dim=2).flatten().tolist() == [100, 100, 101, 101, 200, 200, 300, 300]


def test_config_mapping_round_trip():
    fields = llama.model_fields_from_hf(LLAMA, "config.json")
    assert fields["kv_channels"] == 16 and fields["norm_epsilon"] == 1e-5 and fields["rotary_base"] == 5000.0
    hf = llama.hf_config_from_fields(fields, LLAMA, torch.bfloat16)
    assert llama.model_fields_from_hf(hf, "exported") == fields
    assert hf["dtype"] == "bfloat16" and hf["rope_parameters"]["rope_theta"] == 5000.0
    # a model trained from scratch (a preset) exports as a plain Llama config
    preset = config.ModelConfig.load("instructlm-500m").model_fields()
    plain = llama.hf_config_from_fields(preset, None, torch.float32)
    assert plain["architectures"] == ["LlamaForCausalLM"]
    back, expected = llama.model_fields_from_hf(plain, "x"), {**preset, "kv_channels": 64}
    for key in ("seq_length", "make_vocab_size_divisible_by"):  # a training choice; the converter's flag
        expected.pop(key)
        back.pop(key, None)
    assert back == expected


@pytest.mark.parametrize(
    "change, message",
    [
        ({"architectures": ["Qwen2ForCausalLM"]}, "Qwen2ForCausalLM.*is not supported; supported: LlamaForCausalLM"),
        ({"attention_bias": True}, "attention_bias=true is not supported"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn' is not supported"),
        (
            {
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 2.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192,
                }
            },
            "low_freq_factor.*megatron-core implements",
        ),
        ({"vocab_size": None}, "vocab_size missing"),
    ],
)
def test_unsupported_configs_are_named(change, message):
    with pytest.raises(ConversionError, match=message):
        llama.model_fields_from_hf({**LLAMA, **change}, "some/config.json")


@pytest.fixture
def hf_dir(tmp_path):
    from safetensors.torch import save_file

    shapes = llama.hf_shapes(llama.model_fields_from_hf(LLAMA, "x"))
    tensors = {name: torch.zeros(shape) for name, shape in shapes.items()}
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    return tmp_path, tensors


def test_input_errors_name_the_file_and_tensor(hf_dir, tmp_path):
    from safetensors.torch import save_file

    directory, tensors = hf_dir
    save_file({**tensors, "model.layers.1.mlp.up_proj.weight": torch.zeros(95, 64)}, directory / "model.safetensors")
    with pytest.raises(
        ConversionError,
        match=r"model.safetensors: tensor 'model.layers.1.mlp.up_proj.weight' has "
        r"shape \(95, 64\), but config.json implies \(96, 64\)",
    ):
        hf_checkpoint.import_hf(str(directory), str(tmp_path / "out"))
    del tensors["lm_head.weight"]
    save_file({**tensors, "model.layers.0.self_attn.q_norm.weight": torch.zeros(16)}, directory / "model.safetensors")
    with pytest.raises(
        ConversionError,
        match=r"missing \['lm_head.weight'\], unexpected "
        r"\['model.layers.0.self_attn.q_norm.weight'\]",
    ):
        hf_checkpoint.import_hf(str(directory), str(tmp_path / "out"))
    (directory / "model.safetensors").unlink()
    with pytest.raises(ConversionError, match="neither model.safetensors nor model.safetensors.index.json"):
        hf_checkpoint.import_hf(str(directory), str(tmp_path / "out"))
    with pytest.raises(ConversionError, match="no config.json"):
        hf_checkpoint.import_hf(str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_refuses_a_save_dir_with_a_checkpoint_or_foreign_files(hf_dir, tmp_path):
    directory, _ = hf_dir
    out = tmp_path / "out"
    out.mkdir()
    (out / "latest_checkpointed_iteration.txt").write_text("0")
    with pytest.raises(ConversionError, match="already holds a checkpoint"):
        hf_checkpoint.import_hf(str(directory), str(out))
    (out / "latest_checkpointed_iteration.txt").unlink()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match=r"not empty \(\['notes.txt'\]\)"):
        hf_checkpoint.import_hf(str(directory), str(out))


def test_model_file_errors(tmp_path):
    good = {**presets.PRESETS["tiny"]}
    path = tmp_path / "m.json"
    path.write_text(json.dumps({**good, "num_layer": 3}))
    with pytest.raises(SystemExit, match=r"unknown fields \['num_layer'\]"):
        training_config(["--model", str(path), "--micro-batch-size", "1", "--train-iters", "1"])
    path.write_text(json.dumps({**good, "num_layers": 2.5}))
    with pytest.raises(SystemExit, match="field 'num_layers' is 2.5, expected int"):
        training_config(["--model", str(path), "--micro-batch-size", "1", "--train-iters", "1"])
    path.write_text(json.dumps({**good, "kv_channels": 32, "hf_config": {"any": "thing"}}))
    model = training_config(
        ["--model", str(path), "--micro-batch-size", "1", "--train-iters", "1", "--num-layers", "3"]
    ).model
    assert (model.kv_channels, model.num_layers, model.untie_embeddings_and_output_weights) == (32, 3, True)
    with pytest.raises(SystemExit, match="neither a preset"):
        training_config(["--model", "llama9", "--micro-batch-size", "1", "--train-iters", "1"])


def test_cli_reports_errors_and_exits_1(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA, "architectures": ["GPT2LMHeadModel"]}))
    out = run(
        "tools/convert_checkpoint.py", "hf-to-megatron", "--hf-dir", tmp_path, "--save", tmp_path / "out", expect_rc=1
    )
    assert "error: " in out and "['GPT2LMHeadModel'] is not supported" in out
    out = run(
        "tools/convert_checkpoint.py", "megatron-to-hf", "--load", tmp_path, "--hf-dir", tmp_path / "hf", expect_rc=1
    )
    assert f"{tmp_path}/model.json not found: pass --model" in out


def test_sharded_safetensors_write_and_read(tmp_path, monkeypatch):
    from megatron_ipt.convert import hf_io

    monkeypatch.setattr(hf_io, "MAX_SHARD_BYTES", 3 * 64 * 64 * 2)  # three 64x64 bf16 tensors per shard
    tensors = {f"t{i}": torch.randn(64, 64) for i in range(7)}
    files = hf_io.write_safetensors(str(tmp_path), tensors.items(), torch.bfloat16)
    assert files == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)] + ["model.safetensors.index.json"]
    index = json.load(open(tmp_path / "model.safetensors.index.json"))
    assert index["metadata"]["total_size"] == 7 * 64 * 64 * 2 and index["weight_map"]["t6"].startswith("model-00003")
    reader = hf_io.SafetensorsReader(str(tmp_path))
    reader.check({name: (64, 64) for name in tensors})
    assert all(torch.equal(reader.get(n), t.to(torch.bfloat16)) for n, t in tensors.items())
