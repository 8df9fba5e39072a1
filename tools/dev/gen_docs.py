"""Regenerate the `--help` blocks in docs/*.md, or check that they are current (--check).

A block is whatever sits between two markers naming a command, e.g.

    <!-- BEGIN help: tools/evaluate.py build-tasks -->
    <!-- END help: tools/evaluate.py build-tasks -->

and becomes that command's `--help` output, run from the repository root with this interpreter at a fixed
terminal width, in a fenced block. So the flag reference is the tools' own, and cannot drift from them.
Every tools/*.py must have a block somewhere. argparse lays help out differently in other Python versions;
the blocks are generated with the Makefile's (PYTHON_VERSION below).

    python tools/dev/gen_docs.py           # rewrite stale blocks (make docs)
    python tools/dev/gen_docs.py --check   # exit 1 naming stale or missing blocks (tests/test_docs.py)
"""

import argparse
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PYTHON_VERSION = (3, 11)
COLUMNS = 120
REGENERATE = "make docs (or: python tools/dev/gen_docs.py)"
BLOCK = re.compile(r"<!-- BEGIN help: (?P<command>[^>]+?) -->\n.*?<!-- END help: (?P=command) -->", re.DOTALL)


def help_text(command: str) -> str:
    """`python <command> --help` as a user at a 120-column terminal sees it, from this checkout's code."""
    env = dict(os.environ, COLUMNS=str(COLUMNS), NO_COLOR="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, *command.split(), "--help"], cwd=REPO, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"error: `{command} --help` failed (exit {result.returncode}):\n{result.stderr}")
    return result.stdout


def block(command: str, text: str) -> str:
    return f"<!-- BEGIN help: {command} -->\n```text\n{text.rstrip()}\n```\n<!-- END help: {command} -->"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale or missing")
    args = parser.parse_args(argv)
    if sys.version_info[:2] != PYTHON_VERSION:
        print(f"warning: the blocks are generated with Python {PYTHON_VERSION[0]}.{PYTHON_VERSION[1]}", file=sys.stderr)

    docs = {path: path.read_text(encoding="utf-8") for path in sorted(DOCS.glob("*.md"))}
    commands = sorted({m["command"] for text in docs.values() for m in BLOCK.finditer(text)})
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        blocks = {command: block(command, text) for command, text in zip(commands, pool.map(help_text, commands))}
    tools = sorted(path.relative_to(REPO).as_posix() for path in (REPO / "tools").glob("*.py"))
    missing = [tool for tool in tools if not any(command.split()[0] == tool for command in commands)]
    stale = []
    for path, text in docs.items():
        stale += [
            f"{path.relative_to(REPO)}: {m['command']}" for m in BLOCK.finditer(text) if m[0] != blocks[m["command"]]
        ]
        fresh = BLOCK.sub(lambda m: blocks[m["command"]], text)
        if fresh != text and not args.check:
            path.write_text(fresh, encoding="utf-8")

    for tool in missing:
        print(f"no help block for {tool}: add its markers to the docs page of its stage", file=sys.stderr)
    if args.check:
        for item in stale:
            print(f"stale help block: {item}", file=sys.stderr)
        if stale or missing:
            print(f"regenerate with: {REGENERATE}", file=sys.stderr)
        return 1 if stale or missing else 0
    print(f"{len(stale)} help block(s) rewritten, {len(commands)} commands")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
