"""The tracking settings' defaults, in one place: the config's schema, the trackers and the
command-line tools (import_run, compare) read them. Standard library only (the schema loads
it before any heavy import)."""

__all__ = ["DEFAULT_EXPERIMENT", "DEFAULT_FLUSH_EVERY", "DEFAULT_TIMEOUT_S"]

DEFAULT_EXPERIMENT = "lrexp"  # the MLflow experiment runs go to
DEFAULT_FLUSH_EVERY = 0  # > 0: also send the curve every N steps
DEFAULT_TIMEOUT_S = 5.0  # how long to wait for an unreachable store before giving up on it
