"""Continual pre-training with real weights, end to end through the tools: SmolLM2-135M-Instruct converted from HF,
trained a few steps on an instruction-augmented domain corpus (Newton's Opticks, synthesized by the rules engine,
rendered by the domain recipe, packed with the model's own tokenizer), exported back to HF and loaded by
transformers: its loss on held-out augmented Opticks text (documents never trained on) falls."""

import json

import pytest
import torch

from megatron_ipt import assets
from megatron_ipt.corpus import SAMPLE_GENERAL_INSTRUCTIONS
from tests.launch import run

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # ~2.5 min on 2 cores: 6 training steps of the full 135M model on 1024 tokens each

HELD_OUT = 40  # the last Opticks paragraphs: synthesized and rendered, but never trained on
TRAIN = [
    "--seq-length",
    "256",
    "--micro-batch-size",
    "2",
    "--global-batch-size",
    "4",
    "--train-iters",
    "6",
    "--lr",
    "5e-5",
    "--min-lr",
    "5e-6",
    "--lr-warmup-iters",
    "1",
    "--lr-decay-style",
    "cosine",
    "--split",
    "100,0,0",
    "--log-interval",
    "1",
]


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return path


def augmented_corpus(raw, out, tokenizer, *recipe_flags):
    """raw JSONL -> rules-engine collections (3 rounds, the paper's domain setting) -> domain-recipe corpus."""
    run(
        "tools/synthesize.py", "--input", raw, "--output-dir", out / "collections", "--engine", "rules", "--rounds", "3"
    )
    run(
        "tools/build_corpus.py",
        "--recipe",
        "domain",
        "--collections",
        out / "collections",
        "--tokenizer-type",
        "HuggingFaceTokenizer",
        "--tokenizer-model",
        tokenizer,
        "--output-dir",
        out / "corpus",
        *recipe_flags,
    )
    return out / "corpus"


def held_out_loss(hf_dir, texts, seq=256):
    """Mean next-token loss of transformers' model on the first `seq` tokens of each text."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    ids = torch.tensor([tokenizer(t).input_ids[:seq] for t in texts])
    with torch.no_grad():
        return model(ids, labels=ids).loss.item()


def test_continual_pretraining_from_hf_and_back(smollm2_checkpoint, tmp_path):
    hf_dir, base = smollm2_checkpoint
    tokenizer = base / "tokenizer"
    opticks = [r for r in assets.default_corpus() if r["source"] == "opticks"]
    train_raw = write_jsonl(tmp_path / "train_raw.jsonl", opticks[:-HELD_OUT])
    held_raw = write_jsonl(tmp_path / "held_raw.jsonl", opticks[-HELD_OUT:])
    corpus = augmented_corpus(
        train_raw, tmp_path / "train", tokenizer, "--general-instructions", SAMPLE_GENERAL_INSTRUCTIONS
    )  # 1:1 by tokens (paper)
    held = augmented_corpus(held_raw, tmp_path / "held", tokenizer, "--instruction-ratio", "0")
    run(
        "tools/preprocess_data.py",
        "--input",
        corpus / "corpus-00000.jsonl",
        "--output-prefix",
        corpus / "corpus",
        "--json-keys",
        "text",
        "--tokenizer-type",
        "HuggingFaceTokenizer",
        "--tokenizer-model",
        tokenizer,
        "--append-eod",
        "--workers",
        "1",
    )
    run_dir = tmp_path / "run"
    out = run(
        "tools/pretrain.py",
        "--model",
        base / "model.json",
        "--load",
        base,
        "--save",
        run_dir,
        "--data-path",
        corpus / "corpus_text_document",
        "--tokenizer-type",
        "HuggingFaceTokenizer",
        "--tokenizer-model",
        tokenizer,
        *TRAIN,
        nproc=1,
        env={"OMP_NUM_THREADS": "2"},
    )
    assert "loaded checkpoint" in out and "training done at iteration 6" in out
    # the run describes its model itself (model.json with the source HF config), so the export needs no --model
    assert json.load(open(run_dir / "model.json"))["hf_config"] == json.load(open(base / "model.json"))["hf_config"]
    exported = tmp_path / "hf_after"
    run(
        "tools/convert_checkpoint.py",
        "megatron-to-hf",
        "--load",
        run_dir,
        "--tokenizer-dir",
        tokenizer,
        "--hf-dir",
        exported,
    )
    assert (exported / "tokenizer.json").exists()  # copied from the converted base, so transformers can load it
    texts = [json.loads(line)["text"] for line in open(held / "corpus-00000.jsonl")][:8]
    assert len(texts) == 8
    before, after = held_out_loss(hf_dir, texts), held_out_loss(exported, texts)
    print(f"held-out augmented loss: before {before:.4f}, after {after:.4f}")
    assert after < before - 0.03, (before, after)
