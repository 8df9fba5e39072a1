"""The package map of docs/development.md holds: pipeline stages import only shared layers, and every other package
imports only what its row allows (read from the code's own import statements)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

from tests.launch import REPO

SHARED = {"io", "formats", "tokenizers", "flags", "errors", "text", "metrics", "process", "assets", "_native"}
STAGES = {"synthesis", "corpus", "packing", "training"}
ALLOWED = {
    **{stage: SHARED for stage in STAGES},
    "io": {"errors"},
    "formats": {"io", "_native", "errors"},
    "tokenizers": {"_native", "errors"},
    "flags": set(),
    "errors": set(),
    "text": set(),
    "metrics": set(),
    "process": set(),
    "assets": {"io", "errors"},
    "tuning": SHARED | {"synthesis", "corpus"},
    "convert": SHARED | {"training"},
    "evaluation": SHARED | {"training"},
    "ablation": SHARED | STAGES,
}


def _imports() -> dict:
    """What `_scan` finds, read in a fresh interpreter: CPython 3.11's `ast.parse` can fail with "AST constructor
    recursion depth mismatch" in a process where an earlier test hit a RecursionError (the deep-JSON tests do)."""
    code = "import json, tests.test_layering as t; print(json.dumps({k: sorted(v) for k, v in t._scan().items()}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return {owner: set(targets) for owner, targets in json.loads(out).items()}


def _scan() -> dict:
    """{package or top-level module: {packages it imports}}, from every import statement under megatron_ipt/."""
    found: dict = {}
    root = os.path.join(REPO, "megatron_ipt")
    for folder, _, names in os.walk(root):
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            owner = os.path.relpath(path, root).split(os.sep)[0].removesuffix(".py")
            if owner == "__init__":
                continue
            targets = found.setdefault(owner, set())
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                modules = []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = (
                        [node.module]
                        if node.module != "megatron_ipt"
                        else [f"megatron_ipt.{a.name}" for a in node.names]
                    )
                elif isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                for module in modules:
                    parts = module.split(".")
                    if parts[0] == "megatron_ipt" and len(parts) > 1 and parts[1] != owner:
                        targets.add(parts[1])
    return found


def test_every_package_is_on_the_map_and_imports_only_what_it_may():
    imports = _imports()
    assert set(imports) <= set(ALLOWED), f"packages missing from the map: {sorted(set(imports) - set(ALLOWED))}"
    wrong = {owner: sorted(targets - ALLOWED[owner]) for owner, targets in imports.items() if targets - ALLOWED[owner]}
    assert not wrong, f"imports the package map does not allow (docs/development.md): {wrong}"


def test_no_pipeline_stage_imports_another():
    imports = _imports()
    assert {stage: imports[stage] & STAGES for stage in STAGES} == {stage: set() for stage in STAGES}
