"""The one error hierarchy of the package.

`UserError` is a problem with what the user gave: flags, files, checkpoints, outputs, or what the run needs from
this machine (a package, a server). The library raises it (or a subclass) with a message that names the flag or
path and the problem; the tools catch it at their edge only, print its message as one `error: ...` line and exit
non-zero. Anything else is a bug and keeps its traceback.

Subclasses may also derive from a builtin (`ValueError`, `RuntimeError`) where callers relied on that base before
the hierarchy existed; the tools catch `UserError`, never the builtin.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user gave (flags, files, checkpoints, outputs, the machine's setup): `str(error)` is
    the whole message the tools print after `error: `."""


class ConfigError(UserError, ValueError):
    """A flag or setting the library cannot use: out of range, contradicting another, or naming nothing known."""


class UnavailableError(UserError, RuntimeError):
    """Something the run needs that this machine or a server does not provide: a package that is not installed
    (vLLM, Transformer Engine), a feature it lacks, a server that cannot be reached."""


class OutputError(UserError):
    """An output that cannot be written (an unwritable or full directory, a file where a directory should be);
    the message names the flag and path."""
