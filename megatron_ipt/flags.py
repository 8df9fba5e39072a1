"""Command-line flags declared on config dataclass fields: one declaration per flag.

A config field carries its flag (name, help, choices, ...) in its metadata through `flag(...)`; `add_flags` turns a
dataclass's fields into argparse arguments (the field's default is the flag's default) and `config_from_args` builds
the dataclass back from the parsed namespace. Adding a flag to a tool is then one field plus its use:

    @dataclass(frozen=True)
    class PackConfig:
        output_prefix: str = flag(help="outputs are {prefix}_{key}_document.{bin,idx}", required=True)
        workers: int = flag(1, help="tokenizer processes")
        append_eod: bool = flag(False, help="append the end-of-document token")

    add_flags(parser.add_argument_group("output"), PackConfig)
    config = config_from_args(PackConfig, parser.parse_args())

The flag is `--` plus the field name with `_` as `-` unless `flags=` names it (Megatron-LM spellings, aliases). Types
come from the annotation: `bool` is a switch (`store_true`, or `store_false` when the default is True and `flags=`
names the negative spelling), `Optional[X]` is X with None as default, `Tuple[X, ...]`/`List[X]` take `nargs`.
Fields without `flag(...)` metadata are not flags (derived values, internal state). `group=` puts a flag into the
argument group of that title (made on first use), `exclusive=` into a mutually exclusive set inside it, and `aliases=`
adds spellings that set the field to a constant (`Alias`). A tool whose parser several config classes fill calls
`in_help_order` last, so that its usage line lists the flags as its --help does.
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import difflib
import os
import sys
import types
import typing
from typing import Any, NamedTuple, Sequence

_KEY = "megatron_ipt.flag"
_NO_DEFAULT = dataclasses.MISSING


class Alias(NamedTuple):
    """Another spelling of a flag that sets its field to `const` (Megatron-LM's `--use-flash-attn` for
    `--attention-backend flash`); or, with `dest`, another way to give the field's value that the tool turns into it
    (`--token-budget-from SUMMARY` for `--token-budget`): a flag storing its own value into `dest`, beside the field's
    flag (in its mutually exclusive set, if any)."""

    option: str
    const: Any = None
    help: str | None = None
    dest: str | None = None
    metavar: str | None = None


def flag(
    default: Any = _NO_DEFAULT,
    *,
    help: str | None,  # noqa: A002 - argparse's own name for it; None: a flag without a help line
    flags: Sequence[str] = (),
    required: bool = False,
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    nargs: str | int | None = None,
    type: Any = None,  # noqa: A002 - argparse's own name for it
    action: str | None = None,
    default_factory: Any = _NO_DEFAULT,
    group: str | None = None,
    exclusive: str | None = None,
    aliases: Sequence[Alias] = (),
    field_required: bool = False,
    flag_default: Any = _NO_DEFAULT,
) -> Any:
    """A dataclass field that is also a command-line flag (see the module docstring). `type` overrides the
    annotation's conversion (e.g. a parser of `1,2,3`, which then reads one argument even for a sequence field);
    `action` overrides the switch action of a bool.
    `field_required`: the field has no default (a kw_only dataclass: code that builds the config must give it); the
    flag is still optional unless `required`, e.g. where a preset may give the value (`add_flags(...,
    as_overrides=True)`). `flag_default`: the flag's default where it differs from the field's (a tool that uses
    every core by default, a library call that uses one)."""
    spec = dict(
        help=help,
        flags=tuple(flags),
        required=required,
        choices=choices,
        metavar=metavar,
        nargs=nargs,
        type=type,
        action=action,
        group=group,
        exclusive=exclusive,
        aliases=tuple(aliases),
        flag_default=flag_default,
    )
    if field_required:
        return dataclasses.field(metadata={_KEY: spec})
    if default_factory is not _NO_DEFAULT:
        return dataclasses.field(default_factory=default_factory, metadata={_KEY: spec})
    if default is _NO_DEFAULT and not required:
        raise TypeError("flag(): give a default, required=True or field_required=True")
    return dataclasses.field(default=None if default is _NO_DEFAULT else default, metadata={_KEY: spec})


def flag_fields(cls) -> list:
    """The fields of dataclass `cls` that are flags, in declaration order."""
    return [f for f in dataclasses.fields(cls) if _KEY in f.metadata]


def _unwrap(hint) -> tuple[Any, bool, bool]:
    """(element type, optional, sequence) of a field's annotation."""
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(members) < len(typing.get_args(hint))
        hint = members[0] if len(members) == 1 else str
        origin = typing.get_origin(hint)
    if origin in (list, tuple, collections.abc.Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return (args[0] if args else str), optional, True
    return hint, optional, False


def _default_of(field: dataclasses.Field) -> Any:
    if field.metadata[_KEY]["flag_default"] is not _NO_DEFAULT:
        return field.metadata[_KEY]["flag_default"]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def add_flags(parser, cls, exclude: Sequence[str] = (), as_overrides: bool = False) -> None:
    """Declare every flag field of dataclass `cls` (but those named in `exclude`) on `parser` (a parser or an
    argument group). The dest of each flag is its field's name. `as_overrides`: every flag defaults to None (not
    given) and a switch stores its non-default value, for flags that override values from elsewhere (a preset)."""
    hints = typing.get_type_hints(cls)
    exclusive_groups: dict = {}
    for field in flag_fields(cls):
        if field.name in exclude:
            continue
        spec = field.metadata[_KEY]
        names = spec["flags"] or ("--" + field.name.replace("_", "-"),)
        kind, _optional, sequence = _unwrap(hints[field.name])
        kwargs: dict = dict(dest=field.name, help=spec["help"])
        if spec["required"] and not as_overrides:
            kwargs["required"] = True
        else:
            kwargs["default"] = None if as_overrides else _default_of(field)
        if kind is bool and not sequence:
            if as_overrides:
                kwargs.update(action="store_const", const=field.default is not True)
            else:
                kwargs["action"] = spec["action"] or ("store_false" if field.default is True else "store_true")
        else:
            if spec["action"]:
                kwargs["action"] = spec["action"]
            kwargs["type"] = spec["type"] or kind
            # a sequence takes several arguments, unless its own `type` parses one (e.g. "a,b") or it is appended
            several = sequence and spec["type"] is None and spec["action"] != "append"
            if several or spec["nargs"] is not None:
                kwargs["nargs"] = spec["nargs"] or "+"
            for key in ("choices", "metavar"):
                if spec[key] is not None:
                    kwargs[key] = spec[key]
        target = _group(parser, spec["group"]) if spec["group"] else parser
        if spec["exclusive"]:
            key = (id(target), spec["exclusive"])
            if key not in exclusive_groups:
                exclusive_groups[key] = target.add_mutually_exclusive_group()
            target = exclusive_groups[key]
        target.add_argument(*names, **kwargs)
        for alias in spec["aliases"]:
            if alias.dest:
                target.add_argument(alias.option, dest=alias.dest, metavar=alias.metavar, help=alias.help)
            else:
                target.add_argument(
                    alias.option, dest=field.name, action="store_const", const=alias.const, help=alias.help
                )


def _group(parser, title: str):
    """The argument group of this title on `parser` (or on the parser of the group `parser`), made on first use."""
    container = getattr(parser, "_container", parser)
    found = next((g for g in container._action_groups if g.title == title), None)
    return found if found is not None else container.add_argument_group(title)


def in_help_order(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Order `parser`'s flags as --help lists them, group by group, for its usage line and its "required" errors too.
    Several config classes may fill one group, so the order they were declared in is not the order they are shown
    in; call this once the parser is complete."""
    ordered = [action for group in parser._action_groups for action in group._group_actions]
    parser._actions[:] = ordered + [action for action in parser._actions if action not in ordered]
    return parser


def config_from_args(cls, args: argparse.Namespace, **overrides: Any):
    """Build dataclass `cls` from parsed `args`: each flag field from its dest (a list becomes a tuple where the
    field is a tuple); `overrides` set the other fields (or replace parsed ones)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in flag_fields(cls):
        if field.name in overrides or not hasattr(args, field.name):
            continue
        value = getattr(args, field.name)
        origin = typing.get_origin(_strip_optional(hints[field.name]))
        if isinstance(value, list) and origin in (tuple, typing.Tuple):
            value = tuple(value)
        values[field.name] = value
    values.update(overrides)
    return cls(**values)


def _strip_optional(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return hint


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line each, printed by one process of a torchrun job: an unknown flag is named
    with the closest known flags, instead of the whole usage (which --help prints) and "unrecognized arguments" once
    per rank. Exit status 2, as argparse."""

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self._fail(self._unknown(extras))
        return namespace

    def error(self, message):
        self._fail([f"error: {message} (see --help)"])

    def _fail(self, lines):
        if os.environ.get("RANK", "0") == "0":  # torchrun's global rank 0, or no torchrun
            sys.stderr.write("".join(line + "\n" for line in lines))
        self.exit(2)

    def _unknown(self, extras):
        known = sorted({o for action in self._actions for o in action.option_strings if o.startswith("--")})
        lines, after_flag = [], False
        for token in extras:
            if token.startswith("--"):
                name = token.split("=", 1)[0]
                close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
                lines.append(f"error: unknown flag {name}" + (f" (closest: {', '.join(close)})" if close else ""))
                after_flag = True
            elif not after_flag:  # a value after an unknown flag is its value, not a second error
                lines.append(f"error: unexpected argument {token!r}")
        return lines
