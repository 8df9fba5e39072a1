"""Megatron-LM's launch flags on tools/pretrain.py (issues 12 and 24): every flag is known; refused ones stop with their
reason, no-ops are accepted and reported, implemented ones reach what they configure. The list of Megatron-LM's flags
(megatron_lm_flags.tsv) is walked flag by flag."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from megatron_ipt.flags import flag_fields
from megatron_ipt.training import config, megatron_flags, models, presets
from tests import launch
from tests.training.helpers import REPO, environment, training_config

BASE = ["--model", "tiny", "--micro-batch-size", "1", "--train-iters", "10"]

# The issue's list, less the flags other parts of issue 12 add (--mock-data, --fp16/--loss-scale, --exit-*).
ISSUE_FLAGS = """--attention-backend --ckpt-format --attention-dropout --hidden-dropout --disable-bias-linear
--position-embedding-type --context-parallel-size --rotary-percent --swiglu --group-query-attention --normalization
--no-mmap-bin-files --apply-layernorm-1p --cross-entropy-loss-fusion --num-workers --profile --profile-step-start
--profile-step-end --profile-ranks --use-mcore-models --tiktoken-pattern --calculate-per-token-loss --lr-warmup-samples
--lr-decay-samples --lr-warmup-fraction --no-create-attention-mask-in-dataloader --manual-gc --log-throughput
--decoupled-lr --decoupled-min-lr --empty-unused-memory-level --distributed-timeout-minutes --fp8-param-gather
--vocab-file --merge-file --no-gradient-accumulation-fusion --deterministic-mode --use-checkpoint-args --async-save
--tensorboard-log-interval --log-params-norm --log-num-zeros-in-grad --log-timers-to-tensorboard --wandb-project
--wandb-exp-name --wandb-save-dir --use-flash-attn --tp-comm-overlap --data-args-path --per-split-data-args-path
--num-dataset-builder-threads --init-model-with-meta-device --grad-reduce-in-bf16 --logging-level
--no-check-for-nan-in-loss-and-grad --step-batch-size-schedule --use-megatron-fsdp
--data-parallel-sharding-strategy""".split()


def test_help_lists_every_flag_of_the_issue():
    text = config.build_parser().format_help()
    missing = [flag for flag in ISSUE_FLAGS if f"{flag} " not in text and f"{flag}\n" not in text]
    assert not missing


def _refused_value(flag):
    kwargs = flag.kwargs
    if "choices" in kwargs:
        return [next(c for c in kwargs["choices"] if c not in flag.allowed)]
    if kwargs.get("action") == "store_const":
        return []
    return ["2"] if 1 in flag.allowed else ["1"]


@pytest.mark.parametrize("flag", megatron_flags.REFUSED, ids=lambda f: f.option)
def test_refused_flags_stop_with_their_reason(flag, capsys):
    parser = config.build_parser()
    with pytest.raises(SystemExit) as exit:
        config.TrainingConfig.from_args(parser.parse_args(BASE + [flag.option, *_refused_value(flag)]))
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {flag.option}: {flag.reason}\n"
    for allowed in flag.allowed:  # its accepted values pass
        training_config(BASE + [flag.option, str(allowed)])


def test_refusal_from_the_tool_is_one_line_without_traceback():
    proc = subprocess.run(
        [sys.executable, "tools/pretrain.py", *BASE, "--async-save"],
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --async-save: saves are synchronous")


def test_noop_flags_are_accepted_and_reported():
    argv = []
    for flag in megatron_flags.NOOPS:
        argv += [flag.option] + (["1"] if "type" in flag.kwargs else [])
        argv += [flag.kwargs["choices"][0]] if "choices" in flag.kwargs else []
    cfg = training_config(BASE + argv)
    assert cfg.ignored_flags == tuple(f"{f.option}: {f.reason}" for f in megatron_flags.NOOPS)
    assert training_config(BASE).ignored_flags == ()


def test_architecture_flags_reach_the_transformer_config():
    cfg = training_config(
        BASE
        + ["--normalization", "LayerNorm", "--apply-layernorm-1p", "--attention-dropout", "0.2", "--hidden-dropout"]
        + ["0.3", "--rotary-percent", "0.5", "--cross-entropy-loss-fusion"]
    )
    tc = models.transformer_config(cfg.model, cfg.parallel, cfg.precision)
    assert (tc.normalization, tc.layernorm_zero_centered_gamma) == ("LayerNorm", True)
    assert (tc.attention_dropout, tc.hidden_dropout) == (0.2, 0.3)
    assert tc.cross_entropy_loss_fusion
    with pytest.raises(SystemExit, match="not deterministic"):  # Megatron-LM's rule
        training_config(BASE + ["--cross-entropy-loss-fusion", "--deterministic-mode"])
    assert training_config(BASE + ["--deterministic-mode"]).precision.deterministic_mode
    assert cfg.model.rotary_percent == 0.5 and cfg.model.to_json()["rotary_percent"] == 0.5
    # the presets are what a Llama/Mistral script says with flags; a model by flags alone gets Megatron's defaults
    tiny = training_config(BASE).model
    assert (tiny.normalization, tiny.swiglu, tiny.add_bias_linear, tiny.position_embedding_type) == (
        "RMSNorm",
        True,
        False,
        "rope",
    )
    assert (tiny.attention_dropout, tiny.hidden_dropout) == (0.0, 0.0)
    gpt = config.ModelConfig(**{k: v for k, v in presets.PRESETS["tiny"].items() if k not in presets.MISTRAL_STYLE})
    tc = models.transformer_config(gpt, cfg.parallel, config.PrecisionConfig())
    assert (tc.normalization, tc.gated_linear_unit, tc.add_bias_linear, tc.attention_dropout) == (
        "LayerNorm",
        False,
        True,
        0.1,
    )
    assert tc.activation_func is torch.nn.functional.gelu
    with pytest.raises(SystemExit):
        training_config(BASE + ["--position-embedding-type", "yarn"])
    assert training_config(BASE + ["--use-flash-attn"]).precision.attention_backend == "flash"


def test_model_files_from_before_the_architecture_fields_load_as_they_were_built(tmp_path):
    path = tmp_path / "model.json"
    old = {k: v for k, v in presets.PRESETS["tiny"].items() if k not in presets.MISTRAL_STYLE}
    path.write_text(json.dumps(old), encoding="utf-8")
    assert config.ModelConfig.load(str(path)) == config.ModelConfig.load("tiny")
    path.write_text(json.dumps(old | {"normalization": 1}), encoding="utf-8")
    with pytest.raises(SystemExit, match="'normalization' is 1, expected a string"):
        config.ModelConfig.load(str(path))


def test_group_query_attention_is_needed_for_query_groups_of_a_model_by_flags(capsys):
    argv = ["--micro-batch-size", "1", "--train-iters", "1", "--num-attention-heads", "4", "--num-query-groups", "2"]
    with pytest.raises(SystemExit):
        training_config(argv)
    assert "--group-query-attention" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, warmup, decay",
    [
        (["--train-iters", "10", "--lr-warmup-iters", "2"], 2 * 8, 10 * 8),
        (["--train-iters", "10", "--lr-warmup-fraction", "0.25", "--lr-decay-iters", "8"], 0.25 * 64, 64),
        (["--train-samples", "80", "--lr-warmup-samples", "12", "--lr-decay-samples", "60"], 12, 60),
        (["--train-samples", "80", "--lr-warmup-fraction", "0.1"], 8, 80),
    ],
)
def test_schedule_lengths_are_megatrons(flags, warmup, decay):
    cfg = training_config(["--model", "tiny", "--micro-batch-size", "2", "--global-batch-size", "8", *flags])
    run = cfg.resolve(data_parallel_size=2)
    assert (run.lr_warmup_steps, run.lr_decay_steps) == (warmup, decay)


@pytest.mark.parametrize(
    "flags",
    [
        ["--train-iters", "10", "--lr-warmup-samples", "4"],
        ["--train-samples", "10", "--lr-decay-iters", "4"],
        ["--train-iters", "10", "--lr-warmup-iters", "2", "--lr-warmup-fraction", "0.1"],
    ],
)
def test_schedule_units_must_match_the_training_length(flags):
    with pytest.raises(SystemExit):
        training_config(["--micro-batch-size", "1", *flags])


def test_data_args_path_holds_the_blend(tmp_path):
    path = tmp_path / "blend.txt"
    path.write_text("0.3 /d/a_text_document\n0.7 /d/b_text_document\n", encoding="utf-8")
    cfg = training_config(BASE + ["--data-args-path", str(path)])
    assert cfg.data.data_path == ("0.3", "/d/a_text_document", "0.7", "/d/b_text_document")
    with pytest.raises(SystemExit, match="one of --data-path and --data-args-path"):
        training_config(BASE + ["--data-args-path", str(path), "--data-path", "x"])


def test_use_checkpoint_args_takes_the_model_from_load(tmp_path, capsys):
    model = config.ModelConfig.load("tiny", num_layers=3)
    (tmp_path / "model.json").write_text(json.dumps(model.to_json()), encoding="utf-8")
    cfg = training_config(BASE + ["--load", str(tmp_path), "--use-checkpoint-args"])
    assert cfg.model.num_layers == 3
    with pytest.raises(SystemExit):
        training_config(BASE + ["--load", str(tmp_path), "--use-checkpoint-args", "--num-layers", "2"])
    assert "--num-layers 2 differs from the checkpoint's 3" in capsys.readouterr().err


def test_wandb_without_the_package_is_a_clear_error(capsys):
    if __import__("importlib").util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    with pytest.raises(SystemExit):
        training_config(BASE + ["--wandb-project", "p"])
    assert "needs the wandb package" in capsys.readouterr().err


def test_profile_needs_a_place_for_its_trace():
    with pytest.raises(SystemExit, match="--tensorboard-dir"):
        training_config(BASE + ["--profile"])


@pytest.mark.skipif(models.transformer_engine_available(), reason="Transformer Engine is installed")
def test_context_parallel_needs_transformer_engine():
    cfg = training_config(BASE + ["--context-parallel-size", "2"])
    with pytest.raises(RuntimeError, match="--context-parallel-size"):
        models.transformer_config(cfg.model, cfg.parallel, cfg.precision)


def test_older_position_embedding_spellings_are_megatrons():
    """--use-rotary-position-embeddings is --position-embedding-type rope; --no-position-embedding is accepted only
    beside rope positions, as Megatron-LM's argument check accepts it."""
    shape = ["--micro-batch-size", "1", "--train-iters", "1", "--num-layers", "2", "--hidden-size", "64"]
    shape += [
        "--num-attention-heads",
        "4",
        "--seq-length",
        "64",
        "--max-position-embeddings",
        "64",
        "--vocab-size",
        "512",
    ]
    assert training_config(shape).model.position_embedding_type == "learned_absolute"  # Megatron-LM's default
    rope = training_config(shape + ["--use-rotary-position-embeddings", "--no-position-embedding"]).model
    assert rope.position_embedding_type == "rope"
    with pytest.raises(SystemExit) as exit:
        training_config(shape + ["--no-position-embedding"])
    assert exit.value.code == 2


def test_exit_on_missing_checkpoint_stops_instead_of_starting_fresh(tmp_path):
    """Megatron-LM's meaning: --load names a directory without a checkpoint (a typo, a wiped run): exit non-zero."""
    argv = ["tools/pretrain.py", *BASE, "--mock-data", "--load", str(tmp_path), "--exit-on-missing-checkpoint"]
    out = launch.run(*argv, nproc=1, expect_rc=1, timeout=300)
    assert f"error: --exit-on-missing-checkpoint: no checkpoint in {tmp_path}" in out
    assert "yet: starting from iteration 0" not in out and "training done" not in out


@pytest.mark.skipif(not models.transformer_engine_available(), reason="context parallelism needs Transformer Engine")
def test_cp_comm_type_reaches_the_transformer_config():
    cfg = training_config(BASE + ["--context-parallel-size", "2", "--cp-comm-type", "a2a"])
    assert models.transformer_config(cfg.model, cfg.parallel, cfg.precision).cp_comm_type == "a2a"


def test_docs_show_the_registries_as_they_are():
    """docs/training.md's 'Coming from Megatron-LM' tables are megatron_flags.markdown() (cannot drift)."""
    text = open(os.path.join(REPO, "docs", "training.md"), encoding="utf-8").read()
    begin, end = "<!-- BEGIN megatron_flags.markdown() -->\n", "\n<!-- END megatron_flags.markdown() -->"
    assert text[text.index(begin) + len(begin) : text.index(end)] == megatron_flags.markdown(), (
        "regenerate with: python -m megatron_ipt.training.megatron_flags"
    )


def test_unknown_flags_are_one_line_each_with_the_closest_known_flags_once_per_job():
    """Before: the whole 150-line usage and "unrecognized arguments", once per rank. A prefix of a real flag is
    unknown too (Megatron-LM's allow_abbrev=False), and an argparse error is one line."""
    out = launch.run(
        "tools/pretrain.py",
        *BASE,
        "--tensor-model-paralel-size",
        "2",
        "--lr-warmup",
        "3",
        nproc=2,
        expect_rc=1,
        timeout=300,
    )
    lines = [line for line in out.splitlines() if line.startswith("error: ")]
    assert lines == [
        "error: unknown flag --tensor-model-paralel-size (closest: --tensor-model-parallel-size, "
        "--expert-model-parallel-size, --pipeline-model-parallel-size)",
        "error: unknown flag --lr-warmup (closest: --lr-warmup-iters, --lr-warmup-samples, --lr-warmup-fraction)",
    ]
    assert "usage:" not in out and "unrecognized arguments" not in out
    with pytest.raises(SystemExit) as exit:
        config.build_parser().parse_args(BASE + ["--lr-decay-style", "bogus"])
    assert exit.value.code == 2


# -- every flag of Megatron-LM's dense scripts and training docs (issue 24) ------------------------------------------

LIST = os.path.join(os.path.dirname(__file__), "megatron_lm_flags.tsv")


def _megatron_lm_flags():
    """(flag, sample value or None, sources) of megatron_lm_flags.tsv: the list collected from Megatron-LM."""
    lines = [line for line in open(LIST, encoding="utf-8") if not line.startswith("#")]
    assert lines[0] == "flag\tvalue\tsources\n"
    rows = [tuple(line.rstrip("\n").split("\t")) for line in lines[1:]]
    return [(flag, value or None, sources.split(",")) for flag, value, sources in rows]


MEGATRON_LM_FLAGS = _megatron_lm_flags()

# What an implemented flag needs beside it, by Megatron-LM's own rules (each from the same script or page): the flag's
# effect is measured against BASE plus these
NEEDS = {
    "--lr-decay-samples": ["--train-iters", None, "--train-samples", "80"],
    "--lr-warmup-samples": ["--train-iters", None, "--train-samples", "80"],
    "--fp8-format": ["--bf16"],
    "--fp8-amax-history-len": ["--bf16", "--fp8-format", "hybrid"],
    "--fp8-amax-compute-algo": ["--bf16", "--fp8-format", "hybrid"],
    "--fp8-param-gather": ["--bf16", "--fp8-format", "hybrid"],
    "--profile": ["--tensorboard-dir", "/tb"],
    "--profile-step-start": ["--profile", "--tensorboard-dir", "/tb"],
    "--profile-step-end": ["--profile", "--tensorboard-dir", "/tb", "--profile-step-start", "4"],
    "--profile-ranks": ["--profile", "--tensorboard-dir", "/tb"],
    "--overlap-param-gather": ["--use-distributed-optimizer", "--overlap-grad-reduce"],
    "--grad-reduce-in-bf16": ["--bf16"],
    "--num-query-groups": ["--group-query-attention"],
    "--num-layers-per-virtual-pipeline-stage": ["--pipeline-model-parallel-size", "2"],
    "--decoupled-min-lr": ["--decoupled-lr", "5e-4"],
    "--no-position-embedding": ["--use-rotary-position-embeddings"],
    "--use-checkpoint-args": ["--load", "{load}"],  # a directory with the tiny model's model.json
}
# Flags given instead of another (the length of training in samples, not iterations): that one's field changes too
INSTEAD = {"--train-samples": "--train-iters"}
# Flags that are only valid together (GPT-2's BPE files): given together, each may change only their fields
TOGETHER = {
    "--vocab-file": ["--tokenizer-type", "GPT2BPETokenizer", "--merge-file", "/data/gpt2-merges.txt"],
    "--merge-file": ["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", "/data/gpt2-vocab.json"],
    # no tokenizer type is assumed for a file that does not exist (the scripts give both)
    "--tokenizer-model": ["--tokenizer-type", "HuggingFaceTokenizer"],
}


# the fields a flag may set: the config groups', the model's and the Megatron-LM rules' (megatron_flags.ModelRules)
CONFIG_FIELDS = {
    f.name
    for cls in (
        config.ModelConfig,
        config.ParallelConfig,
        config.PrecisionConfig,
        config.InitConfig,
        config.OptimizerConfig,
        config.DataConfig,
        config.CheckpointConfig,
        config.LoggingConfig,
        megatron_flags.ModelRules,
    )
    for f in flag_fields(cls)
}


def _with(argv, needs):
    """`argv` with `needs` applied: a flag followed by None is removed (with its value), others are added."""
    argv, i = list(argv), 0
    while i < len(needs):
        if i + 1 < len(needs) and needs[i + 1] is None:
            at = argv.index(needs[i])
            del argv[at : at + 2]
            i += 2
        else:
            argv.append(needs[i])
            i += 1
    return argv


def _leaves(value, path=""):
    """A config as {dotted field path: value}, through nested dataclasses."""
    if dataclasses.is_dataclass(value):
        out = {}
        for f in dataclasses.fields(value):
            if f.compare:
                out.update(_leaves(getattr(value, f.name), f"{path}{f.name}."))
        return out
    return {path[:-1]: value}


def test_the_list_of_megatron_lm_flags_is_megatrons_scripts_and_docs():
    flags = [flag for flag, _, _ in MEGATRON_LM_FLAGS]
    assert len(flags) == len(set(flags)) and len(flags) >= 140
    sources = {source.split("@")[0] for _, _, where in MEGATRON_LM_FLAGS for source in where}
    for script in (
        "examples/gpt3/train_gpt3_175b_distributed.sh",
        "examples/llama/train_llama3_8b_h100_fp8.sh",
        "examples/megatron_fsdp/train_llama3_8b_fsdp_h100_fp8.sh",
        "docs/llama_mistral.md",
        "docs/user-guide/data-loading.md",
    ):
        assert script in sources
    assert all(source.endswith("@d98e8a64") for _, _, where in MEGATRON_LM_FLAGS for source in where)


@pytest.mark.parametrize("flag, value, sources", MEGATRON_LM_FLAGS, ids=[row[0] for row in MEGATRON_LM_FLAGS])
def test_every_megatron_lm_flag_has_one_of_the_three_answers(flag, value, sources, capsys, tmp_path_factory):
    """Implemented (changes its own config field and nothing else), a no-op (named in the start-up notes, the config
    unchanged) or refused (one line naming the flag and what to use instead, exit status 2): exactly one."""
    parser = config.build_parser()
    assert flag in parser._option_string_actions, f"{flag} (from {sources[0]}) is unknown"
    given = [flag] + ([value] if value is not None else [])
    noop = [f for f in megatron_flags.NOOPS if f.option == flag]
    refused = [f for f in megatron_flags.REFUSED if f.option == flag]
    assert len(noop) + len(refused) <= 1
    if refused:
        assert value is None or parser.parse_args(BASE + given).__dict__[refused[0].dest] not in refused[0].allowed
        with pytest.raises(SystemExit) as exit:
            training_config(BASE + given)
        assert exit.value.code == 2
        assert capsys.readouterr().err == f"error: {flag}: {refused[0].reason}\n"
        return
    model_dir = tmp_path_factory.getbasetemp() / "megatron_lm_flags"
    if not model_dir.exists():
        model_dir.mkdir()
        (model_dir / "model.json").write_text(json.dumps(config.ModelConfig.load("tiny").to_json()), encoding="utf-8")
    base = [str(model_dir) if word == "{load}" else word for word in _with(BASE, NEEDS.get(flag, []))]
    before = training_config(base)
    after = training_config(
        (_with(base, [INSTEAD[flag], None]) if flag in INSTEAD else base) + given + TOGETHER.get(flag, [])
    )
    changed = {path for path, v in _leaves(after).items() if _leaves(before).get(path) != v}
    if noop:
        assert after.ignored_flags == (f"{flag}: {noop[0].reason}",) and not changed
        return
    assert after.ignored_flags == ()
    together = [flag, *TOGETHER.get(flag, []), *([INSTEAD[flag]] if flag in INSTEAD else [])]
    dests = {parser._option_string_actions[f].dest for f in together if f.startswith("--")}
    tokenizer = {
        a.dest
        for g in parser._action_groups
        for a in g._group_actions
        if "--tokenizer-type" in g._group_actions[0].option_strings
    }
    assert dests <= CONFIG_FIELDS | tokenizer, f"{flag} sets no config field"
    # the flag's own field changes (unless the sample is its default), nothing else; the tokenizer flags make one
    # TokenizerSpec together
    outside = {
        p
        for p in changed
        if p.rsplit(".", 1)[-1] not in dests and not (dests & tokenizer and p.startswith("data.tokenizer."))
    }
    assert not outside, (flag, outside)
