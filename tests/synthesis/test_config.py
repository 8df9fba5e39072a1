"""SynthesisConfig and the engines' settings: one declaration per flag, and a misspelt engine setting is an error."""

import dataclasses

import pytest

from megatron_ipt.flags import config_from_args
from megatron_ipt.synthesis.config import SynthesisConfig
from megatron_ipt.synthesis.engines import ENGINES, build_engine, engine_settings, settings_class
from tools.synthesize import HELP_ORDER, build_parser


def test_every_flag_is_a_field_and_parses_back_to_the_config():
    args = build_parser().parse_args(["--input", "in.jsonl", "--output-dir", "out", "--carry-keys", "id,,doc"])
    config = config_from_args(SynthesisConfig, args)
    assert config.carry_keys == ("id", "doc") and config.rounds == 1 and config.resolved_schedule == "pipelined"
    assert dataclasses.replace(config, engine="hf").resolved_schedule == "barrier"


@pytest.mark.parametrize("name", ENGINES)
def test_a_misspelt_engine_setting_is_an_error_naming_it_and_the_engine(name):
    with pytest.raises(TypeError, match=f"the {name} engine has no setting 'max_num_seq'"):
        build_engine(name, max_num_seq=4)


def test_an_engine_takes_the_flags_it_has_a_field_for():
    args = vars(build_parser().parse_args(["--input", "i", "--output-dir", "o", "--dtype", "bfloat16"]))
    assert engine_settings("hf", args)["dtype"] == "bfloat16" and "batch_size" not in engine_settings("vllm", args)
    assert set(engine_settings("rules", args)) == {"prompt_style"}  # model, lengths, sampling: not the miner's
    assert all(dataclasses.is_dataclass(settings_class(name)) for name in ENGINES)
    assert sorted(HELP_ORDER) == sorted(ENGINES)  # every engine's flags are on the tool


def test_out_of_range_settings_are_refused_when_the_config_is_made():
    with pytest.raises(ValueError, match="--shard-index 2 not in"):
        SynthesisConfig(input="i", output_dir="o", num_shards=2, shard_index=2)
    with pytest.raises(ValueError, match="--max-failure-rate 2"):
        SynthesisConfig(input="i", output_dir="o", max_failure_rate=2)
