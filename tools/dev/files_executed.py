"""Run a Python script (argv[1:]) and record which project files and functions execute in it.

Used by tools/dev/trace_document.sh to count what a reader follows when one document goes from raw JSONL to a
training loss. Each process (one per torchrun rank) writes `$TRACE_OUT.<pid>.json`: sorted [file, function] pairs.
"""

import atexit
import json
import os
import runpy
import sys
import threading

ROOT = os.path.realpath(os.environ["TRACE_ROOT"])
seen = set()


def record(frame, event, arg):
    if event == "call":
        path = os.path.realpath(frame.f_code.co_filename)
        if path.startswith(ROOT + "/megatron_ipt/") or (
            path.startswith(ROOT + "/tools/") and not path.startswith(ROOT + "/tools/dev/")
        ):
            seen.add((os.path.relpath(path, ROOT), frame.f_code.co_name))


def dump():
    with open(f"{os.environ['TRACE_OUT']}.{os.getpid()}.json", "w") as f:
        json.dump(sorted(seen), f)


if __name__ == "__main__":
    atexit.register(dump)
    sys.argv = [os.path.abspath(sys.argv[1])] + sys.argv[2:]
    sys.path.insert(0, os.path.dirname(sys.argv[0]))
    sys.setprofile(record)
    threading.setprofile(record)
    runpy.run_path(sys.argv[0], run_name="__main__")
