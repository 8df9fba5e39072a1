"""Downloaded Hugging Face directories are input (issue 13): an index never makes the converter read a file outside
the model directory, and bad config values or corrupt safetensors are one-line errors naming the file and key or
tensor, found before any model is built."""

import json
import struct

import pytest
import torch

from megatron_ipt.convert import hf_checkpoint, hf_io, llama
from megatron_ipt.convert.llama import ConversionError
from tests.convert.test_layout import LLAMA
from tests.launch import run


@pytest.fixture
def hf_dir(tmp_path):
    from safetensors.torch import save_file

    directory = tmp_path / "hf"
    directory.mkdir()
    shapes = llama.hf_shapes(llama.model_fields_from_hf(LLAMA, "x"))
    tensors = {name: torch.zeros(shape) for name, shape in shapes.items()}
    save_file(tensors, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(LLAMA))
    return directory, tensors


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/tmp/outside.safetensors", "sub/x.safetensors", "..", 5])
def test_an_index_cannot_point_outside_the_model_directory(hf_dir, shard):
    from safetensors.torch import save_file

    directory, tensors = hf_dir
    (directory / "model.safetensors").rename(directory / "model-00001-of-00001.safetensors")
    save_file({"lm_head.weight": tensors["lm_head.weight"]}, directory.parent / "outside.safetensors")
    weight_map = {name: "model-00001-of-00001.safetensors" for name in tensors}
    weight_map["lm_head.weight"] = shard
    index = directory / hf_io.INDEX_FILE
    index.write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ConversionError) as e:
        hf_io.SafetensorsReader(str(directory))
    assert str(e.value) == (
        f"{index}: weight_map['lm_head.weight'] is {shard!r}; a shard must be a plain file name in {directory}"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rms_norm_eps": "tiny"}, "rms_norm_eps is 'tiny'; expected a positive finite number"),
        ({"rms_norm_eps": float("nan")}, "rms_norm_eps is nan; expected a positive finite number"),
        ({"rms_norm_eps": 0}, "rms_norm_eps is 0; expected a positive finite number"),
        ({"rope_theta": -1}, "rope_theta is -1; expected a positive finite number"),
        ({"rope_theta": float("inf")}, "rope_theta is inf; expected a positive finite number"),
        ({"rope_parameters": {"rope_type": "default", "rope_theta": "1e4"}}, "rope_parameters.rope_theta is '1e4'"),
        ({"rope_scaling": [8.0]}, r"rope_scaling is \[8.0\]; expected an object or null"),
        ({"num_attention_heads": 0}, "num_attention_heads is 0; expected a positive integer"),
        ({"hidden_size": -64}, "hidden_size is -64; expected a positive integer"),
        ({"vocab_size": 1000.5}, "vocab_size is 1000.5; expected a positive integer"),
        ({"num_hidden_layers": True}, "num_hidden_layers is True; expected a positive integer"),
        ({"intermediate_size": "96"}, "intermediate_size is '96'; expected a positive integer"),
        ({"num_key_value_heads": 0}, "num_key_value_heads is 0; expected a positive integer"),
        ({"num_key_value_heads": 3}, "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
        ({"hidden_size": 66}, "hidden_size 66 is not divisible by num_attention_heads 4"),
        ({"head_dim": 0}, "head_dim is 0; expected a positive integer"),
        ({"max_position_embeddings": -1}, "max_position_embeddings is -1; expected a positive integer"),
        ({"sliding_window": "4096"}, "sliding_window is '4096'; expected a positive integer"),
        ({"tie_word_embeddings": "false"}, "tie_word_embeddings is 'false'; expected true or false"),
        ({"attention_bias": "no"}, "attention_bias is 'no'; expected true or false"),
        ({"architectures": [{"a": 1}]}, "architectures is .*; expected a list of class names"),
    ],
)
def test_bad_config_values_name_the_file_and_key(change, message):
    with pytest.raises(ConversionError, match=f"^some/config.json: {message}"):
        llama.model_fields_from_hf({**LLAMA, **change}, "some/config.json")


def test_config_files_that_are_not_a_config_object(hf_dir, tmp_path):
    directory, _ = hf_dir
    config = directory / "config.json"
    for text, message in (
        ("[1, 2]", "expected a JSON object at the top level, got list"),
        ("[" * 100000 + "]" * 100000, "not valid JSON: nested too deeply"),
        ('{"a": ', "not valid JSON"),
    ):
        config.write_text(text)
        with pytest.raises(ConversionError, match=f"^{config}: {message}"):
            hf_checkpoint.import_hf(str(directory), str(tmp_path / "out"))
    config.write_text(json.dumps(LLAMA).replace('"rms_norm_eps": 1e-05', '"rms_norm_eps": NaN'))
    with pytest.raises(ConversionError, match=f"^{config}: rms_norm_eps is nan"):  # json's NaN literal
        hf_checkpoint.import_hf(str(directory), str(tmp_path / "out"))


def _corrupt(raw: bytes, how: str) -> bytes:
    header_len = struct.unpack("<Q", raw[:8])[0]
    return {
        "truncated": raw[: len(raw) // 2],
        "empty": b"",
        "bad header": raw[:8] + b"{" + b"x" * (header_len - 1) + raw[8 + header_len :],
        "header length beyond the file": struct.pack("<Q", len(raw) * 10) + raw[8:],
        "trailing bytes": raw + b"junk",
    }[how]


@pytest.mark.parametrize("how", ["truncated", "empty", "bad header", "header length beyond the file", "trailing bytes"])
def test_corrupt_safetensors_name_the_file(hf_dir, tmp_path, how):
    directory, _ = hf_dir
    weights = directory / "model.safetensors"
    weights.write_bytes(_corrupt(weights.read_bytes(), how))
    with pytest.raises(ConversionError, match=f"^{weights}: not a readable safetensors file: "):
        hf_checkpoint.import_hf(str(directory), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_corrupt_shard_names_the_shard(hf_dir, tmp_path):
    directory, tensors = hf_dir
    hf_io.write_safetensors(str(directory), tensors.items(), torch.float32)  # as one file; shard it by hand below
    (directory / "model.safetensors").rename(directory / "a.safetensors")
    (directory / "b.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"not json")
    weight_map = {name: "a.safetensors" for name in tensors}
    weight_map["model.norm.weight"] = "b.safetensors"
    (directory / hf_io.INDEX_FILE).write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ConversionError, match=f"^{directory / 'b.safetensors'}: not a readable safetensors file"):
        hf_checkpoint.import_hf(str(directory), str(tmp_path / "out"))


def test_integer_weights_are_refused_not_cast(hf_dir, tmp_path):
    from safetensors.torch import save_file

    directory, tensors = hf_dir
    tensors["model.norm.weight"] = torch.ones(64, dtype=torch.int32)
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(
        ConversionError,
        match=f"^{directory / 'model.safetensors'}: tensor 'model.norm.weight' has dtype I32; weights must be one of",
    ):
        hf_checkpoint.import_hf(str(directory), str(tmp_path / "out"))


def test_cli_prints_one_line_and_exits_1(hf_dir, tmp_path):
    directory, _ = hf_dir
    (directory / "config.json").write_text(json.dumps({**LLAMA, "rms_norm_eps": "tiny"}))
    out = run(
        "tools/convert_checkpoint.py", "hf-to-megatron", "--hf-dir", directory, "--save", tmp_path / "o", expect_rc=1
    )
    assert out.strip() == f"error: {directory}/config.json: rms_norm_eps is 'tiny'; expected a positive finite number"


def test_a_full_disk_or_unwritable_output_is_one_line_and_leaves_nothing(hf_dir, tmp_path):
    directory, _ = hf_dir
    (tmp_path / "file").write_text("a regular file, not a directory")
    out = run(
        "tools/convert_checkpoint.py",
        "hf-to-megatron",
        "--hf-dir",
        directory,
        "--save",
        tmp_path / "file" / "o",
        expect_rc=1,
    )
    assert out.strip().startswith("error: ") and f"{tmp_path}/file" in out and "Traceback" not in out
    run("tools/convert_checkpoint.py", "hf-to-megatron", "--hf-dir", directory, "--save", tmp_path / "ours")
    # the export under a 64 KB file-size limit: the kernel's EFBIG, as a full disk would fail the write
    limited = (
        "import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16)); sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    export = ["tools/convert_checkpoint.py", "megatron-to-hf", "--load", tmp_path / "ours", "--hf-dir", tmp_path / "e"]
    out = run("-c", limited, *export, expect_rc=1)
    assert "error: " in out and "model.safetensors: cannot write" in out and "Traceback" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "hf", "ours"]  # no half-written export left
