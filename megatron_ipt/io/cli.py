"""How every tool ends on bad input: `error: file:line: problem` on stderr and exit status 1."""

from __future__ import annotations

import sys

from .inputs import InputError

SKIP_BAD_LINES_HINT = "(nothing was written; pass --skip-bad-lines to skip and count such lines instead)"


def report_error(error: Exception, has_skip_flag: bool = True) -> int:
    """Print `error` for the user, with the --skip-bad-lines hint when the tool has that flag (`has_skip_flag`)
    and it would have skipped the line; returns the tool's exit status, 1."""
    print(f"error: {error}", file=sys.stderr)
    if has_skip_flag and isinstance(error, InputError) and error.skippable:
        print(SKIP_BAD_LINES_HINT, file=sys.stderr)
    return 1
