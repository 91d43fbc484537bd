"""Imported only inside the warm workers' forkserver (``lrexp.sweep.warm_workers`` preloads it).

A SIGTERM to the process group (SLURM, ``docker stop``) kills CPython's forkserver, and the
workers forked from it with it, before they record their partial curves: so the server ignores
SIGTERM, and every worker it forks gets the default back (its job handles SIGTERM itself).
"""

import os
import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
