"""Imported only inside the warm workers' forkserver (``lrexp.sweep.warm_workers`` preloads it).

SLURM, ``docker stop`` and ``kill -TERM -<group>`` signal the whole process group. CPython's
forkserver ignores SIGINT but dies on SIGTERM, and the joblib workers forked from it then exit
at once (code 255) before they can record their partial curves. So the server ignores SIGTERM,
and every worker it forks gets the default back: a worker's job handles SIGTERM itself
(``lrexp.sweep.interrupt.sigterm_as_interrupt``).
"""

import os
import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
