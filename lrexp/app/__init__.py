"""The Hydra app: ``main`` (the entry point), ``runner`` (the one reader of a run's DictConfig:
build, run, write, report), ``schema`` (the config's types), ``data`` and ``models`` (the
registries the configs name)."""
