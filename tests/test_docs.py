"""The README and docs/: flag references current, links resolving, the front door pointing at every page."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the blocks hold Python 3.11's argparse layout")
def test_help_blocks_are_current():
    result = subprocess.run(
        [sys.executable, "tools/dev/gen_docs.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, f"{result.stderr}\nthe docs' --help blocks are stale: run `make docs`"


def anchors(page: Path) -> set:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces become '-'."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text(encoding="utf-8")), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_links_resolve(page):
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{page.name}: links to missing files or headings: {broken}"


def test_readme_names_the_two_commands_and_links_every_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make quickstart" in readme and "make test" in readme
    unlinked = [p.name for p in PAGES[1:] if f"](docs/{p.name})" not in readme]
    assert not unlinked, f"README.md does not link {unlinked}"
