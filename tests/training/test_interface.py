"""Training as Megatron-LM users launch it: the split guard on a small corpus, --mock-data, a model described by
flags alone (never a silent preset), and the start-up report (arguments block, parameter counts, TensorBoard text)."""

import json
import re
import subprocess
import sys

import pytest

from megatron_ipt import assets
from megatron_ipt.training import config, datasets, model_config, presets
from tests.training.helpers import REPO, environment, free_port, training_config
from tests.training.make_data import make

TOKENIZER = assets.mistral_tokenizer_model()


@pytest.fixture(scope="module")
def corpus397(tmp_path_factory):
    """The quickstart's size: 397 documents of the embedded corpus (pydoc topics, then Opticks paragraphs)."""
    texts = [record["text"] for record in assets.default_corpus()][:397]
    return make(str(tmp_path_factory.mktemp("data") / "c397_text_document"), texts, TOKENIZER)


def pretrain(nproc, *flags, timeout=180):
    """tools/pretrain.py under torchrun; a hang fails the test at `timeout` instead of stalling the suite."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    command += ["--master-port", str(free_port()), "tools/pretrain.py", *map(str, flags)]
    proc = subprocess.run(command, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


# -- the split guard ---------------------------------------------------------------------------------------------------


def test_empty_test_part_of_megatrons_usual_split_is_left_out(corpus397):
    # 949,50,1 on 397 documents: test = round(0.999 * 397) .. 397 = no document; megatron-core would loop for ever
    matrix, notes = datasets.plan_splits([corpus397], "949,50,1", [8, 4, 0])
    assert matrix[:2] == datasets.split_matrix("949,50,1")[:2] and matrix[2] is None
    assert len(notes) == 1 and "train 377 documents / " in notes[0] and "test 0 documents / 0 tokens" in notes[0]
    # samples asked of an empty part: one line naming the split, the parts' sizes and what to change
    with pytest.raises(SystemExit) as error:
        datasets.plan_splits([corpus397], "999,1,0", [8, 4, 0])
    message = str(error.value)
    assert "\n" not in message
    assert re.search(r"--split 999,1,0 on .*: train 397 documents / \d+ tokens, valid 0 documents / 0 tokens", message)
    assert "4 valid samples are asked of the empty valid part" in message and "--eval-interval" in message


def test_949_50_1_trains_on_397_documents_and_an_impossible_split_stops(corpus397):
    common = ["--model", "tiny", "--data-path", corpus397, "--tokenizer-model", TOKENIZER, "--micro-batch-size", "2"]
    common += ["--train-iters", "2", "--lr", "1e-3", "--eval-interval", "2", "--eval-iters", "1"]
    rc, out = pretrain(1, *common, "--split", "949,50,1")
    assert rc == 0, out[-3000:]
    assert "the test part of" in out and "not built" in out
    assert "validation loss at iteration 2" in out and "training done at iteration 2" in out
    rc, out = pretrain(1, *common, "--split", "999,1,0")
    assert rc != 0 and "--split 999,1,0 on" in out and "valid 0 documents / 0 tokens" in out, out[-3000:]
    assert not re.search(r'File ".*(megatron_ipt|megatron/core)', out)  # our message, no traceback of the run
    assert "number of parameters" not in out  # it stops before the model is built


# -- a model from flags alone ------------------------------------------------------------------------------------------

RUN = ["--micro-batch-size", "1", "--train-iters", "1"]


def test_shape_flags_alone_describe_the_model_with_megatrons_defaults():
    cfg = training_config(
        ["--num-layers", "4", "--hidden-size", "768", "--num-attention-heads", "12", "--seq-length", "1024"]
        + ["--tokenizer-model", TOKENIZER]
        + RUN
    )
    model = cfg.model
    assert model.source == "flags"
    assert (model.num_layers, model.hidden_size, model.num_attention_heads, model.seq_length) == (4, 768, 12, 1024)
    assert model.ffn_hidden_size == 3072 and not model.swiglu  # Megatron-LM: 4 * hidden without --swiglu
    assert model.num_query_groups == 12 and model.kv_channels is None  # no GQA; kv channels 768 / 12
    assert model.max_position_embeddings == 1024 and model.vocab_size == 32000  # seq length; the tokenizer's
    assert not model.untie_embeddings_and_output_weights and model.rotary_base == 10000
    swiglu = training_config(
        ["--num-layers", "4", "--hidden-size", "768", "--num-attention-heads", "12", "--seq-length", "1024"]
        + ["--swiglu", "--tokenizer-model", TOKENIZER]
        + RUN
    )
    assert swiglu.model.ffn_hidden_size == 2048  # Megatron-LM with --swiglu: int(4 * 768 * 2 / 3 / 64) * 64
    # a preset gives defaults that flags override
    cfg = training_config(["--model", "tiny", "--num-layers", "3"] + RUN)
    assert cfg.model == config.ModelConfig(**{**presets.PRESETS["tiny"], "num_layers": 3})


def test_without_model_or_shape_flags_the_error_names_what_is_missing():
    with pytest.raises(SystemExit) as error:
        training_config(RUN)
    message = str(error.value)
    for flag in ("--num-layers", "--hidden-size", "--num-attention-heads", "--seq-length", "--vocab-size"):
        assert flag in message
    assert "--model" in message and "tiny" in message
    with pytest.raises(SystemExit, match=r"missing --seq-length \(give them"):
        training_config(
            ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--tokenizer-model", TOKENIZER]
            + RUN
        )


def test_evaluate_without_model_json_needs_the_model_flags(tmp_path):
    import argparse

    from megatron_ipt.evaluation.megatron_backend import CheckpointSpec
    from megatron_ipt.tokenizers import add_tokenizer_args

    parser = argparse.ArgumentParser()  # tools/evaluate.py's checkpoint flags
    parser.add_argument("--load")
    for add in (model_config.add_model_args, config.add_parallel_args, config.add_precision_args):
        add(parser)
    add_tokenizer_args(parser, required=False)
    flags = ["--load", str(tmp_path), "--tokenizer-model", TOKENIZER]
    with pytest.raises(SystemExit, match="missing --num-layers, --hidden-size, --num-attention-heads, --seq-length"):
        CheckpointSpec.from_args(parser.parse_args(flags))
    (tmp_path / "model.json").write_text(json.dumps(presets.PRESETS["tiny"]))
    assert CheckpointSpec.from_args(parser.parse_args(flags)).model == config.ModelConfig.load("tiny")


# -- --mock-data and the start-up report -------------------------------------------------------------------------------


def _real_parameter_count(flags):
    """The model's parameter count, built alone (one process, TP 1) from the same flags."""
    code = (
        "import sys\n"
        "from megatron_ipt.training import models\n"
        "from tests.training.helpers import training_config\n"
        "cfg = training_config(sys.argv[1:])\n"
        "chunks, _ = models.build(cfg.model, cfg.parallel, cfg.precision, cfg.init)\n"
        "print('COUNT', sum(p.numel() for c in chunks for p in c.parameters()))\n"
    )
    env = environment(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1")
    proc = subprocess.run(
        [sys.executable, "-c", code, *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(re.search(r"COUNT (\d+)", proc.stdout).group(1))


def test_mock_data_trains_a_flags_only_model_and_reports_it(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    shape = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "64"]
    shape += ["--vocab-size", "1000"]
    tb = str(tmp_path / "tb")
    flags = ["--mock-data", *shape, "--micro-batch-size", "2", "--train-iters", "3", "--lr", "1e-3"]
    rc, out = pretrain(2, *flags, "--tensor-model-parallel-size", "2", "--log-interval", "1", "--tensorboard-dir", tb)
    assert rc == 0, out[-3000:]
    assert "iteration        3/       3" in out and "training done at iteration 3" in out  # no --data-path, no files
    # Megatron-LM's arguments block, once (rank 0), sorted, with its dotted alignment and the resolved values
    block = out.split("------------------------ arguments ------------------------\n")
    assert len(block) == 2, out[-3000:]
    lines = block[1].split("-------------------- end of arguments ---------------------")[0].splitlines()
    names = [line.split()[0] for line in lines]
    assert names == sorted(names, key=str.lower)
    assert "  ffn_hidden_size " + "." * (48 - len("ffn_hidden_size")) + " 256" in lines  # 4 * 64: no --swiglu
    for expected in ("model ....", "mock_data .", "tensor_model_parallel_size", "padded_vocab_size", "kv_channels"):
        assert any(line.startswith("  " + expected) for line in lines), expected
    # parameter counts: one line per (tensor, pipeline) rank, and the model's, which is its real count
    for tp in (0, 1):
        assert f" > number of parameters on (tensor, pipeline) model parallel rank ({tp}, 0): " in out
    total = int(re.search(r" > number of parameters in the model: (\d+)", out).group(1))
    assert total == _real_parameter_count(shape + ["--micro-batch-size", "1", "--train-iters", "1"])
    # the arguments as TensorBoard text, one tag per argument (Megatron-LM's write_args_to_tensorboard)
    acc = EventAccumulator(tb, size_guidance={"tensors": 0})
    acc.Reload()
    assert len(acc.Tags()["tensors"]) == len(lines)
    text = acc.Tensors("ffn_hidden_size/text_summary")[0]
    assert (text.step, text.tensor_proto.string_val[0]) == (0, b"256")
    assert acc.Tensors("mock_data/text_summary")[0].tensor_proto.string_val[0] == b"True"


def test_defaults_are_megatrons():
    cfg = training_config(["--model", "tiny"] + RUN)
    assert cfg.optimizer.lr_decay_style == "linear" and cfg.logging.eval_iters == 100
    assert (cfg.precision.fp8_amax_history_len, cfg.precision.fp8_amax_compute_algo) == (1, "most_recent")
    assert cfg.checkpoint.keep_last == 0  # every checkpoint kept
    assert cfg.data.split == "969,30,1"
