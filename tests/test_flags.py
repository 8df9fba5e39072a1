"""megatron_ipt/flags.py: a config field declares its flag once; parsing builds the config back."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Optional, Tuple

import pytest

from megatron_ipt.flags import Alias, add_flags, config_from_args, flag, flag_fields, in_help_order


@dataclass(frozen=True)
class _Example:
    output_prefix: str = flag(help="where", required=True)
    workers: int = flag(1, help="processes")
    append_eod: bool = flag(False, help="append EOD")
    masked_softmax_fusion: bool = flag(
        True, help="off with --no-masked-softmax-fusion", flags=("--no-masked-softmax-fusion",)
    )
    json_keys: Tuple[str, ...] = flag(("text",), help="keys")
    limit: Optional[int] = flag(None, help="at most this many")
    mode: str = flag("a", help="a mode", choices=("a", "b"))
    derived: int = field(default=0)  # not a flag


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_flags(parser, _Example)
    return parser, config_from_args(_Example, parser.parse_args(argv), derived=7)


def test_defaults_come_from_the_fields():
    _, config = _parse(["--output-prefix", "out"])
    assert config == _Example(output_prefix="out", derived=7)


def test_every_kind_of_flag_parses():
    _, config = _parse(
        [
            "--output-prefix",
            "o",
            "--workers",
            "3",
            "--append-eod",
            "--no-masked-softmax-fusion",
            "--json-keys",
            "a",
            "b",
            "--limit",
            "5",
            "--mode",
            "b",
        ]
    )
    assert config.workers == 3 and config.append_eod and not config.masked_softmax_fusion
    assert config.json_keys == ("a", "b") and config.limit == 5 and config.mode == "b"


def test_bad_values_and_missing_required_are_refused(capsys):
    parser = argparse.ArgumentParser()
    add_flags(parser, _Example)
    with pytest.raises(SystemExit):
        parser.parse_args([])
    with pytest.raises(SystemExit):
        parser.parse_args(["--output-prefix", "o", "--mode", "c"])
    assert "invalid choice" in capsys.readouterr().err


def test_only_flag_fields_become_flags_and_exclude_skips():
    assert [f.name for f in flag_fields(_Example)][-1] == "mode"
    parser = argparse.ArgumentParser()
    add_flags(parser, _Example, exclude=("limit",))
    assert "--limit" not in parser.format_help() and "--derived" not in parser.format_help()


def test_a_flag_needs_a_default_or_required():
    with pytest.raises(TypeError):
        flag(help="no default")


@dataclass(frozen=True, kw_only=True)
class _Grouped:
    shape: int = flag(help="from a preset unless given", field_required=True, group="model")
    backend: str = flag(
        "auto",
        help="kernel",
        choices=("auto", "flash"),
        aliases=[Alias("--use-flash", "flash", help="--backend flash")],
        group="kernels",
    )
    budget: Optional[int] = flag(
        None,
        help="tokens",
        exclusive="budget",
        aliases=[Alias("--budget-from", dest="budget_from", metavar="SUMMARY", help="an earlier run's")],
        group="kernels",
    )
    workers: int = flag(1, help="processes", flag_default=8, group="model")
    bias: bool = flag(True, help="biases", flags=("--disable-bias",), group="model")


def test_groups_aliases_exclusive_sets_and_flag_defaults():
    parser = argparse.ArgumentParser()
    parser.add_argument_group("kernels")  # made beforehand: the fields fill it, and --help keeps this order
    add_flags(parser, _Grouped)
    titles = [g.title for g in parser._action_groups]
    assert titles.index("kernels") < titles.index("model")
    args = parser.parse_args(["--shape", "3", "--use-flash", "--budget-from", "s.json"])
    assert (args.backend, args.budget, args.budget_from, args.workers) == ("flash", None, "s.json", 8)
    with pytest.raises(SystemExit):  # one of --budget and --budget-from
        parser.parse_args(["--budget", "1", "--budget-from", "s.json"])
    config = config_from_args(_Grouped, parser.parse_args(["--shape", "3", "--disable-bias"]))
    assert config == _Grouped(shape=3, workers=8, bias=False)
    with pytest.raises(TypeError):  # the field has no default: code that builds the config gives it
        _Grouped()
    assert _Grouped(shape=1).workers == 1  # the flag's default is not the field's


def test_override_flags_default_to_none_and_switches_store_their_other_value():
    parser = argparse.ArgumentParser()
    add_flags(parser, _Grouped, as_overrides=True)
    args = parser.parse_args([])
    assert (args.shape, args.backend, args.workers, args.bias) == (None, None, None, None)
    args = parser.parse_args(["--disable-bias", "--shape", "2"])
    assert (args.bias, args.shape) == (False, 2)


def test_in_help_order_lists_flags_group_by_group(capsys):
    parser = argparse.ArgumentParser(prog="p")
    first, second = parser.add_argument_group("first"), parser.add_argument_group("second")
    second.add_argument("--b")
    first.add_argument("--a", required=True)
    second.add_argument("--c", required=True)
    in_help_order(parser)
    assert parser.format_usage() == "usage: p [-h] --a A [--b B] --c C\n"
    with pytest.raises(SystemExit):
        parser.parse_args([])
    assert "the following arguments are required: --a, --c" in capsys.readouterr().err


@dataclass(frozen=True)
class _OneArgumentSequences:
    keys: Tuple[str, ...] = flag(
        ("id", "source"), help="comma-separated", type=lambda s: tuple(k for k in s.split(",") if k), group="io"
    )
    urls: Optional[Tuple[str, ...]] = flag(None, help="repeat", action="append", group="io")
    rounds: int = flag(1, help="rounds", group="synthesis")


def test_groups_and_one_argument_sequences():
    parser = argparse.ArgumentParser()
    add_flags(parser, _OneArgumentSequences)
    titles = [g.title for g in parser._action_groups]
    assert titles[-2:] == ["io", "synthesis"]
    config = config_from_args(
        _OneArgumentSequences, parser.parse_args(["--keys", "a,,b", "--urls", "u1", "--urls", "u2"])
    )
    assert config == _OneArgumentSequences(keys=("a", "b"), urls=("u1", "u2"))
    assert config_from_args(_OneArgumentSequences, parser.parse_args([])) == _OneArgumentSequences()
