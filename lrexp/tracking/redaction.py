"""Credentials out of everything lrexp writes: URIs with ``user:password@`` are shown as
``***@`` on the console, in logs, in config.yaml, and in MLflow params and tags."""

from __future__ import annotations

import logging
import re
from pathlib import Path

__all__ = ["RedactingFilter", "first_line", "redact", "redact_file", "redact_logs"]

# scheme://user:password@host -> scheme://***@host
# the whole authority up to its last @ (a password may hold one), stopping where a URI ends;
# also as Hydra records a sweep job's override, its colons escaped (http\://alice\:pw@host)
_CREDENTIALS = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*\\?://)[^/?#\s\"'@]*(?:@[^/?#\s\"'@]*)*@")


# the same URI percent-encoded whole (as a query parameter or a file name carries it):
# scheme%3A%2F%2Fuser%3Apassword%40host, the authority ending at an encoded slash
_ENCODED_PART = r"(?:(?!%2F|%40)[^/?#\s\"'@])*"
_ENCODED_CREDENTIALS = re.compile(
    rf"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*%3A%2F%2F){_ENCODED_PART}(?:%40{_ENCODED_PART})*%40",
    re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the credentials of every URI in it replaced by ``***``."""
    text = _CREDENTIALS.sub(r"\g<scheme>***@", text)
    return _ENCODED_CREDENTIALS.sub(r"\g<scheme>***%40", text)


def redact_file(path: Path) -> None:
    """Rewrite a text file lrexp did not write itself (Hydra's records) with ``redact``."""
    text = path.read_text()
    if redact(text) != text:
        path.write_text(redact(text))


class RedactingFilter(logging.Filter):
    """Redacts URI credentials in every record a handler writes, whoever logged it (Hydra's
    launchers log each job's overrides, a tracking.uri with a password among them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if redact(message) != message:
            record.msg, record.args = redact(message), None
        return True


def redact_logs() -> None:
    """Redact every log record this process makes, from now on: at the record's creation, so
    that handlers set up later keep it (Hydra's launchers reconfigure logging before they log
    each job's overrides), and on the root logger's handlers for records made before."""
    global _factory_installed
    if not _factory_installed:
        make_record = logging.getLogRecordFactory()

        def redacting_record(*args: object, **kwargs: object) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            RedactingFilter().filter(record)
            return record

        logging.setLogRecordFactory(redacting_record)
        _factory_installed = True
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


_factory_installed = False


def first_line(error: object) -> str:
    """An error's first line, redacted: for a warning or a tag (not SQLAlchemy's essay)."""
    lines = redact(str(error)).strip().splitlines()
    return lines[0] if lines else type(error).__name__
