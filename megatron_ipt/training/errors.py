"""The exception type for a training-side problem the user can fix (a corrupt or missing input, checkpoint or
output), a `UserError` (megatron_ipt/errors.py): tools print it as a single `error: ...` line naming the path, never a
traceback."""

from megatron_ipt.errors import UserError


class TrainingInputError(UserError, RuntimeError):
    """`str(error)` is the whole message: name the file (and key/iteration) and the problem."""
