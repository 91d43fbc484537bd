"""Where results go besides the run dir: the MLflow tracker, built by ``build`` in this process or
a ``sidecar``; ``import_run`` and ``compare`` (a run dir sent later, runs read back)."""
