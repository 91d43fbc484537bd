"""The one exception type for a user's config mistake, apart from the schema (which needs Hydra),
so the zoo's nets and datasets raise it as ordinary callables."""

from lrexp.engine.settings import SettingError

__all__ = ["ConfigError"]


class ConfigError(SettingError):
    """A config value a user set wrongly; the message says which, what was given and the fix.
    A ``SettingError`` too: the app answers both with exit 2 and the message."""
