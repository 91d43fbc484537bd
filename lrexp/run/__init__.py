"""One record of a run's life, below the app and the sweep that both write and read it.

``files`` names a run dir's files and their formats, ``summary`` is ``summary.json`` (the typed
record of one run), ``life`` its statuses, names and exit codes, ``stops`` what stopped this
process's work (a signal, a scheduler, an interrupted sweep), ``run_dir`` reads a run dir back
without trusting it, ``sweep_dir`` a sweep dir's jobs. Standard library, PyYAML and the engine
only: the runner, the sweep callbacks, the SLURM launcher and ``import_run`` share them.
"""
