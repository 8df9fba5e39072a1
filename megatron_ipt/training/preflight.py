"""What tools/pretrain.py checks before it builds the model (minutes on a large one) and how it reports what it finds.

`check_outputs`: every directory the run writes to besides `--save` (TensorBoard, the data index cache, W&B) can be
created and takes a byte, so an unwritable or full disk is one line naming the flag and path now, not a traceback
after the model was built. `report`: a TrainingInputError (or a config SystemExit) ends the rank with one `error: ...`
line, printed by global rank 0 only, and recorded in torchrun's per-rank error file so torchrun's failure summary
shows that line instead of "To enable traceback see ..." (and so a failure on another rank alone is never silent).
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
import time
from typing import List, Tuple

from megatron_ipt.training.errors import TrainingInputError


def output_dirs(training) -> List[Tuple[str, str]]:
    """(flag, directory) of each output of the run other than --save (owned by the checkpoint code)."""
    from megatron_ipt.training import datasets

    log, d = training.logging, training.data
    dirs = []
    if log.tensorboard_dir:
        dirs.append(("--tensorboard-dir", log.tensorboard_dir))
    if log.wandb_project:
        dirs.append(("--wandb-save-dir", log.wandb_save_dir or os.path.join(training.checkpoint.save or ".", "wandb")))
    if d.data_path and not d.mock_data:
        from megatron.core.datasets.utils import get_blend_from_list

        prefixes = get_blend_from_list(list(d.data_path))[0]
        flag = "--data-cache-path" if d.data_cache_path else "--data-cache-path (default: index-cache/ by the data)"
        dirs.append((flag, datasets.index_cache_dir(d.data_cache_path, prefixes)))
    return dirs


def check_writable(flag: str, directory: str) -> None:
    """Create `directory` and write one byte to a scratch file in it (a full disk refuses even that), then remove
    it. TrainingInputError naming the flag and path on any failure."""
    try:
        os.makedirs(directory, exist_ok=True)
        fd, scratch = tempfile.mkstemp(prefix=".write-check-", dir=directory)
        try:
            os.write(fd, b"\0")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.remove(scratch)
    except OSError as error:
        reason = "disk full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        raise TrainingInputError(f"{flag} {directory}: cannot write there ({reason})") from None


def check_outputs(training) -> None:
    for flag, directory in output_dirs(training):
        check_writable(flag, directory)


def is_reporting_rank() -> bool:
    return int(os.environ.get("RANK", 0)) == 0


def report(error: BaseException) -> int:
    """End this rank on a user-fixable error: `error: ...` on stderr from global rank 0 (every rank but the first
    stays quiet, so the line appears once), the line in torchrun's error file from every rank that has one, exit
    status 1. A rank without torchrun's error file prints too, so the message is never lost."""
    message = str(error.code if isinstance(error, SystemExit) else error)
    line = message if message.startswith("error:") else f"error: {message}"
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if is_reporting_rank() or not error_file:
        print(line, file=sys.stderr, flush=True)
    if error_file:
        _record(error_file, line)
    return 1


def _record(path: str, line: str) -> None:
    """In the layout torch.distributed.elastic's own @record writes: torchrun's summary shows "py_callstack" as the
    rank's "traceback" (here our one line; the string "message" form would work too, with two warnings)."""
    try:
        with open(path, "w") as f:
            extra = {"py_callstack": line, "timestamp": str(int(time.time()))}
            json.dump({"message": {"message": line, "extraInfo": extra}}, f)
    except OSError:
        pass  # torchrun's own "To enable traceback" line then; rank 0's stderr line stands
