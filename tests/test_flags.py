"""megatron_ipt/flags.py: a config field declares its flag once; parsing builds the config back."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Optional, Tuple

import pytest

from megatron_ipt.flags import add_flags, config_from_args, flag, flag_fields


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


@dataclass(frozen=True)
class _Grouped:
    keys: Tuple[str, ...] = flag(
        ("id", "source"), help="comma-separated", type=lambda s: tuple(k for k in s.split(",") if k), group="io"
    )
    urls: Optional[Tuple[str, ...]] = flag(None, help="repeat", action="append", group="io")
    rounds: int = flag(1, help="rounds", group="synthesis")


def test_groups_and_one_argument_sequences():
    parser = argparse.ArgumentParser()
    add_flags(parser, _Grouped)
    titles = [g.title for g in parser._action_groups]
    assert titles[-2:] == ["io", "synthesis"]
    config = config_from_args(_Grouped, parser.parse_args(["--keys", "a,,b", "--urls", "u1", "--urls", "u2"]))
    assert config == _Grouped(keys=("a", "b"), urls=("u1", "u2"))
    assert config_from_args(_Grouped, parser.parse_args([])) == _Grouped()
