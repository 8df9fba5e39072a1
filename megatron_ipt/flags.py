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
`group=` puts the flag in the parser's argument group of that title (made on first use), so one dataclass can
spread its flags over the sections of a tool's --help. Fields without `flag(...)` metadata are not flags (derived
values, internal state).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Sequence

_KEY = "megatron_ipt.flag"
_NO_DEFAULT = dataclasses.MISSING


def flag(
    default: Any = _NO_DEFAULT,
    *,
    help: str,  # noqa: A002 - argparse's own name for it
    flags: Sequence[str] = (),
    required: bool = False,
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    nargs: str | int | None = None,
    type: Any = None,  # noqa: A002 - argparse's own name for it
    action: str | None = None,
    default_factory: Any = _NO_DEFAULT,
    group: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line flag (see the module docstring). `type` overrides the
    annotation's conversion (e.g. a parser of `1,2,3`, which then reads one argument even for a sequence field);
    `action` overrides the switch action of a bool; `group` names the argument group the flag is listed in."""
    spec = dict(
        group=group,
        help=help,
        flags=tuple(flags),
        required=required,
        choices=choices,
        metavar=metavar,
        nargs=nargs,
        type=type,
        action=action,
    )
    if default_factory is not _NO_DEFAULT:
        return dataclasses.field(default_factory=default_factory, metadata={_KEY: spec})
    if default is _NO_DEFAULT and not required:
        raise TypeError("flag(): give a default, or required=True")
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
    if origin in (list, tuple, typing.List, typing.Tuple, Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return (args[0] if args else str), optional, True
    return hint, optional, False


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def _group(parser, title):
    """The argument group of `parser` titled `title`, made if there is none yet (argparse keeps its groups in
    `_action_groups` and offers no lookup)."""
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def add_flags(parser, cls, exclude: Sequence[str] = ()) -> None:
    """Declare every flag field of dataclass `cls` (but those named in `exclude`) on `parser` (a parser or an
    argument group; a field's `group=` needs a parser). The dest of each flag is its field's name."""
    hints = typing.get_type_hints(cls)
    for field in flag_fields(cls):
        if field.name in exclude:
            continue
        spec = field.metadata[_KEY]
        target = _group(parser, spec["group"]) if spec.get("group") else parser
        names = spec["flags"] or ("--" + field.name.replace("_", "-"),)
        kind, _optional, sequence = _unwrap(hints[field.name])
        kwargs: dict = dict(dest=field.name, help=spec["help"])
        if spec["required"]:
            kwargs["required"] = True
        else:
            kwargs["default"] = _default_of(field)
        if kind is bool and not sequence:
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
        target.add_argument(*names, **kwargs)


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
