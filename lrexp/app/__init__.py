"""The Hydra app: ``main`` (the entry point and exit codes), ``runner`` (one run: check, build,
run, write and report, every stop recorded), ``build`` (plain objects from the config: the only
DictConfig reader besides the runner), ``report`` (run dir files and console), ``schema`` (the
config's types and the app's own rules), ``data`` and ``models`` (the registries the configs
name)."""
