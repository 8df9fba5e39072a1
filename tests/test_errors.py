"""One error hierarchy: every user-error class of the package derives from megatron_ipt.errors.UserError, the tools
catch that (and OSError) at their edge, never a builtin that a bug raises too, and a bug keeps its traceback."""

import ast
import importlib
import inspect
import os
import pkgutil

import pytest

import megatron_ipt
from megatron_ipt.errors import ConfigError, OutputError, UnavailableError, UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Exceptions the package defines that are not the user's to fix: control flow inside a loop or an engine.
INTERNAL = {
    "megatron_ipt.training.callbacks.stability.NonFiniteLoss",  # the training diverged: tools/pretrain.py exits 2
    "megatron_ipt.training.callbacks.stability.NonFiniteGradNorm",  # caught inside the loop
    "megatron_ipt.synthesis.engines.openai.RequestFailed",  # retried, then counted as a failed generation
}
# Modules that need what a CPU test machine may lack (their exception classes, if any, are covered where importable).
OPTIONAL_IMPORTS = ("vllm", "transformer_engine")


def _package_exceptions():
    found, skipped = {}, []
    for info in pkgutil.walk_packages(megatron_ipt.__path__, "megatron_ipt."):
        try:
            module = importlib.import_module(info.name)
        except ImportError as e:
            if not any(name in str(e) for name in OPTIONAL_IMPORTS):
                raise
            skipped.append(info.name)
            continue
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return found, skipped


def test_every_exception_class_of_the_package_is_a_user_error():
    found, _ = _package_exceptions()
    assert "megatron_ipt.io.inputs.InputError" in found and "megatron_ipt.ablation.plan.PlanError" in found
    outside = sorted(name for name, cls in found.items() if not issubclass(cls, UserError) and name not in INTERNAL)
    assert not outside, (
        f"exception classes outside the UserError hierarchy (derive them, or list them as internal): {outside}"
    )
    stale = sorted(INTERNAL - set(found))
    assert not stale, f"INTERNAL names classes that no longer exist: {stale}"


def test_builtin_bases_kept_where_callers_rely_on_them():
    from megatron_ipt.ablation.plan import PlanError
    from megatron_ipt.convert.llama import ConversionError
    from megatron_ipt.evaluation import scoring
    from megatron_ipt.formats.indexed import IndexFormatError
    from megatron_ipt.io.jsonl import LineError
    from megatron_ipt.synthesis import manifest
    from megatron_ipt.training.errors import TrainingInputError

    for cls in (PlanError, ConversionError, IndexFormatError, LineError, ConfigError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError), cls
    for cls in (TrainingInputError, UnavailableError):
        assert issubclass(cls, UserError) and issubclass(cls, RuntimeError), cls
    assert scoring.OutputError is manifest.OutputError is OutputError  # one class, where there were two


def _tool_files():
    tools = os.path.join(REPO, "tools")
    return sorted(os.path.join(tools, name) for name in os.listdir(tools) if name.endswith(".py"))


def test_tools_catch_no_builtin_a_bug_raises_too():
    """At a tool's edge: UserError, OSError (and its subclasses), SystemExit, the training loop's NonFiniteLoss.
    `except ValueError` there would turn a bug deep in a library into a misleading one-line error."""
    banned = {"Exception", "BaseException", "ValueError", "RuntimeError", "TypeError", "KeyError", "IndexError"}
    offenders = []
    for path in _tool_files():
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler):
                caught = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
                names = {c.id if isinstance(c, ast.Name) else getattr(c, "attr", None) for c in caught}
                if node.type is None or names & banned:
                    offenders.append(f"{os.path.basename(path)}:{node.lineno}")
    assert not offenders, offenders


def _merge_inputs(tmp_path):
    from megatron_ipt.formats.indexed import IndexedDatasetWriter

    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(2):
        with IndexedDatasetWriter(str(shards / f"s{i}"), vocab_size=100) as writer:
            writer.add_documents([[1, 2, 3]])
    return str(shards), str(tmp_path / "out" / "merged")


def test_a_bug_keeps_its_traceback_and_a_user_error_is_one_line(tmp_path, monkeypatch, capsys):
    """tools/merge_datasets.py caught ValueError at its edge: a ValueError from a bug in the merge was printed as
    `error: ...` and exit 1. Now the bug propagates (its traceback), and a UserError is still one line."""
    from tools import merge_datasets as tool

    shards, out = _merge_inputs(tmp_path)
    (tmp_path / "out").mkdir()

    def buggy(prefixes, output_prefix):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(tool, "merge_datasets", buggy)
    with pytest.raises(ValueError, match="an internal invariant broke"):
        tool.main(["--input", shards, "--output-prefix", out])

    def refused(prefixes, output_prefix):
        raise ConfigError("something the user gave")

    monkeypatch.setattr(tool, "merge_datasets", refused)
    assert tool.main(["--input", shards, "--output-prefix", out]) == 1
    assert capsys.readouterr().err == "error: something the user gave\n"
