"""HF <-> megatron conversion on tiny random Llama/Mistral models: logits at TP=1 and TP=2 match transformers, and
every round trip is weight-identical (HF -> ours -> HF, ours -> HF -> ours, ours saved at TP=2 / PP=2 -> HF)."""

import json
import os

import pytest
import torch

from megatron_ipt.training.model_config import pad_vocab
from tests.launch import run

pytestmark = pytest.mark.slow  # ~55 s: 10 conversions, one torchrun (2 processes) over three layouts
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

SEQ = 48
# Weights ~5x larger than transformers' default init, so attention is far from uniform and a wrong RoPE, head
# grouping or gate/up order changes the logits by orders of magnitude more than the tolerance.
INIT = 0.1
COMMON = dict(hidden_size=64, num_hidden_layers=2, max_position_embeddings=128, initializer_range=INIT)
VARIANTS = {
    # GQA (2 query heads per group), untied, sharded safetensors input
    "llama-gqa-untied": (
        transformers.LlamaConfig,
        dict(
            vocab_size=1000,
            intermediate_size=96,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=5000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
        (1, 128),
    ),
    # tied embeddings, head_dim != hidden/heads, Llama-3.1 rope scaling
    "llama-tied-scaled-rope": (
        transformers.LlamaConfig,
        dict(
            vocab_size=1000,
            intermediate_size=96,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=32,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=500000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=8192,
            ),
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
        ),
        (2, 128),
    ),
    # 4 query heads per group; an odd vocabulary saved unpadded (1003 rows): at TP=2 the model pads to 1004 rows
    # and megatron-core loads the 1003 shared rows (the embedding and output layer allow a shape mismatch)
    "mistral-gqa": (
        transformers.MistralConfig,
        dict(
            vocab_size=1003,
            intermediate_size=128,
            num_attention_heads=8,
            num_key_value_heads=2,
            rope_theta=10000.0,
            sliding_window=None,
            tie_word_embeddings=False,
        ),
        (1, 1),
    ),
}
# the converter's --tensor-model-parallel-size and --make-vocab-size-divisible-by per variant (Megatron's padding rule)
LOGITS_TOLERANCE = dict(atol=1e-4, rtol=1e-4)  # float32; measured max |diff| ~1e-6 at logits of magnitude ~5


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    torch.manual_seed(0)
    tokens = torch.randint(0, 1000, (2, SEQ))
    torch.save(tokens, root / "tokens.pt")
    jobs = []
    for name, (config_class, kwargs, (tp, divisible_by)) in VARIANTS.items():
        model = transformers.AutoModelForCausalLM.from_config(config_class(**COMMON, **kwargs)).eval()
        shard = "60KB" if name == "llama-gqa-untied" else "1GB"
        model.save_pretrained(root / name / "hf", max_shard_size=shard)
        with torch.no_grad():
            torch.save(model(tokens).logits, root / name / "reference_logits.pt")
        d = root / name
        jobs += [
            ["import", str(d / "hf"), str(d / "ck"), tp, divisible_by],
            ["export", str(d / "ck"), str(d / "hf_back"), None, None],
            ["import", str(d / "hf_back"), str(d / "ck_again"), tp, divisible_by],
        ]
    run("tests/convert/convert_jobs.py", json.dumps(jobs))
    checkpoints = [root / name / "ck" for name in VARIANTS]
    run(
        "tests/convert/megatron_logits.py",
        root / "tokens.pt",
        "1x1,2x1,1x2",
        *checkpoints,
        nproc=2,
        env={"RESAVE": "1"},
    )
    exports = []
    for name in VARIANTS:
        for layout in ("tp2_pp1", "tp1_pp2"):
            d = root / name
            exports.append(
                [
                    "export",
                    str(d / "ck" / f"resaved_{layout}"),
                    str(d / f"hf_from_{layout}"),
                    str(d / "ck" / "model.json"),
                    None,
                ]
            )
    # a model file without the source HF config (like a preset): a plain Llama config.json
    fields = json.load(open(root / "llama-gqa-untied" / "ck" / "model.json"))
    del fields["hf_config"]
    (root / "plain.json").write_text(json.dumps(fields))
    exports.append(
        ["export", str(root / "llama-gqa-untied" / "ck"), str(root / "plain_hf"), str(root / "plain.json"), None]
    )
    run("tests/convert/convert_jobs.py", json.dumps(exports))
    return root


def hf_tensors(directory):
    tensors = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(directory, name)))
    return tensors


def megatron_tensors(directory, tmp_path):
    """Every tensor of a dist checkpoint, read with torch's own DCP converter (no process group needed)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = tmp_path / (os.path.basename(directory) + ".pt")
    dcp_to_torch_save(os.path.join(directory, "iter_0000000"), out)
    return {k: v for k, v in torch.load(out, weights_only=False).items() if torch.is_tensor(v)}


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("tp", [1, 2])
def test_logits_match_transformers(work, name, tp):
    reference = torch.load(work / name / "reference_logits.pt")
    ours = torch.load(work / name / "ck" / f"logits_tp{tp}_pp1.pt")
    vocab = reference.shape[-1]
    fields = json.load(open(work / name / "ck" / "model.json"))
    assert ours.shape == (*reference.shape[:-1], pad_vocab(vocab, tp, fields["make_vocab_size_divisible_by"]))
    assert reference.abs().max() > 1.0  # not a degenerate near-uniform model
    torch.testing.assert_close(ours[..., :vocab], reference, **LOGITS_TOLERANCE)
    assert torch.count_nonzero(ours[..., vocab:]) == 0  # padded vocabulary rows are zeros


@pytest.mark.parametrize("name", VARIANTS)
def test_round_trips_are_weight_identical(work, name, tmp_path):
    original = hf_tensors(work / name / "hf")
    for exported in ("hf_back", "hf_from_tp2_pp1", "hf_from_tp1_pp2"):
        back = hf_tensors(work / name / exported)
        assert sorted(back) == sorted(original), exported
        for key, tensor in original.items():
            assert torch.equal(back[key], tensor), (exported, key)
    first = megatron_tensors(work / name / "ck", tmp_path)
    again = megatron_tensors(work / name / "ck_again", tmp_path)
    assert sorted(first) == sorted(again)
    assert all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.parametrize("name", VARIANTS)
def test_transformers_loads_the_export(work, name):
    model = transformers.AutoModelForCausalLM.from_pretrained(work / name / "hf_from_tp2_pp1").eval()
    with torch.no_grad():
        logits = model(torch.load(work / "tokens.pt")).logits
    torch.testing.assert_close(logits, torch.load(work / name / "reference_logits.pt"), atol=0, rtol=0)
    config, kwargs = model.config, VARIANTS[name][1]
    assert config.tie_word_embeddings == kwargs["tie_word_embeddings"]
    head_dim = kwargs.get("head_dim", 64 // kwargs["num_attention_heads"])
    assert (config.vocab_size, config.head_dim) == (kwargs["vocab_size"], head_dim)


def test_model_file_and_layout(work):
    from megatron.core import dist_checkpointing

    def rows(name):
        metadata = dist_checkpointing.load_tensors_metadata(str(work / name / "ck" / "iter_0000000"))
        return metadata["embedding.word_embeddings.weight"].global_shape[0]

    fields = json.load(open(work / "mistral-gqa" / "ck" / "model.json"))
    assert (fields["vocab_size"], fields["make_vocab_size_divisible_by"], rows("mistral-gqa")) == (1003, 1, 1003)
    assert rows("llama-tied-scaled-rope") == 1024  # padded for TP=2: a multiple of 128 x 2
    assert fields["hf_config"]["architectures"] == ["MistralForCausalLM"]
    assert (fields["num_query_groups"], fields["kv_channels"]) == (2, 8)
    assert fields["untie_embeddings_and_output_weights"]
    tied = json.load(open(work / "llama-tied-scaled-rope" / "ck" / "model.json"))
    assert not tied["untie_embeddings_and_output_weights"]
    assert (tied["use_rope_scaling"], tied["kv_channels"]) == (True, 32)
    assert os.path.exists(work / "llama-gqa-untied" / "hf" / "model.safetensors.index.json")  # sharded input read


def test_export_without_source_config(work):
    model = transformers.AutoModelForCausalLM.from_pretrained(work / "plain_hf").eval()
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.vocab_size == 1000
    with torch.no_grad():
        logits = model(torch.load(work / "tokens.pt")).logits
    torch.testing.assert_close(logits, torch.load(work / "llama-gqa-untied" / "reference_logits.pt"), atol=0, rtol=0)
