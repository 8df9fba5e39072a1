"""Process lifetime: a child that must not outlive the process that started it (training ranks under torchrun,
preprocessing workers) asks the kernel to signal it when its parent dies."""

import ctypes
import os
import signal
import sys
from typing import Optional

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGTERM, parent: Optional[int] = None) -> bool:
    """Deliver `sig` to this process when its parent exits (Linux; elsewhere a no-op returning False).

    The kernel tracks the parent *thread*, so call this from the main thread of a process whose parent outlives
    its own spawning thread (torchrun's agent, multiprocessing's pool). If the parent already died before the
    request took effect we are an orphan already: `sig` at once instead of running on. `parent`: the pid the
    parent gave us (os.getpid() there), which catches a parent that died while this process was still starting
    (a spawned worker imports for seconds before it gets here); without it, only a death from this call on."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid() if parent is None else parent
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # reparented before the request took effect
        os.kill(os.getpid(), sig)
    return True
