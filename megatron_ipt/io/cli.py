"""How every tool ends on bad input (a `UserError` of megatron_ipt/errors.py, or an `OSError`): `error: file:line:
problem` on stderr and exit status 1; and how progress lines write a duration."""

from __future__ import annotations

import errno
import sys

from .inputs import InputError

SKIP_BAD_LINES_HINT = "(nothing was written; pass --skip-bad-lines to skip and count such lines instead)"

# What a failed write or read tells the user; the tools leave nothing half-written behind on any of them.
_OS_PROBLEMS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (file size limit reached)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.EEXIST: "exists already",
    errno.EIO: "input/output error",
}


def describe_error(error: Exception) -> str:
    """One line for the user: an OSError as `PATH: problem` (`error: out/x.bin: no space left on device`)."""
    if isinstance(error, OSError) and error.errno is not None:
        problem = _OS_PROBLEMS.get(error.errno) or (error.strerror or str(error)).lower()
        path = error.filename if error.filename is not None else ""
        if error.filename2 is not None:
            path = f"{path} -> {error.filename2}"
        return f"{path}: {problem}" if path != "" else problem
    return str(error)


def report_error(error: Exception, has_skip_flag: bool = True) -> int:
    """Print `error` for the user, with the --skip-bad-lines hint when the tool has that flag (`has_skip_flag`)
    and it would have skipped the line; returns the tool's exit status, 1."""
    print(f"error: {describe_error(error)}", file=sys.stderr)
    if has_skip_flag and isinstance(error, InputError) and error.skippable:
        print(SKIP_BAD_LINES_HINT, file=sys.stderr)
    return 1


def format_seconds(seconds: float) -> str:
    """A duration for a progress line: "45 s", "12 min", "2.5 h"."""
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
