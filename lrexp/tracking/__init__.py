"""Where results go besides the run dir: the MLflow tracker (buffered, batched, redacted), built
by ``build`` in this process or a ``sidecar``, ``import_run`` (sends a run dir recorded offline),
``compare`` (a table and an overlay of runs read back from a store); ``defaults`` holds the
tracking settings' defaults."""
