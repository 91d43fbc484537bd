"""Credentials are redacted in every form a URI is written: plain, as Hydra escapes a sweep
job's override, quoted, with a password that holds '@' or percent-escapes, and
percent-encoded whole."""

import pytest

from lrexp.tracking.redaction import redact


@pytest.mark.parametrize(("written", "redacted"), [
    ("http://alice:s3cret@127.0.0.1:5000", "http://***@127.0.0.1:5000"),
    (r"tracking.uri=http\://alice\:s3cret@127.0.0.1\:5000", r"tracking.uri=http\://***@127.0.0.1\:5000"),
    ("tracking.uri='http://alice:s3cret@h/x'", "tracking.uri='http://***@h/x'"),
    ('"postgresql+psycopg2://u:p%3Aw@127.0.0.1/db"', '"postgresql+psycopg2://***@127.0.0.1/db"'),
    ("http://alice:pa@ss@h/x", "http://***@h/x"),
    ("https://token@h", "https://***@h"),
    ("http%3A%2F%2Falice%3As3cret%40h%3A5000%2Fx", "http%3A%2F%2F***%40h%3A5000%2Fx"),
    ("u=http%3a%2f%2falice%3Apa%40ss%40h%2Fx", "u=http%3a%2f%2f***%40h%2Fx"),
])
def test_credentials_are_redacted_in_every_written_form(written, redacted):
    assert redact(written) == redacted
    assert "s3cret" not in redact(written) and redact(redacted) == redacted


@pytest.mark.parametrize("clean", [
    "http://127.0.0.1:5000/#/experiments/1", "sqlite:///mlflow.db", "user@example.org",
    "http%3A%2F%2Fh%2Fa%40b", "plain%40text",
])
def test_text_without_credentials_is_left_alone(clean):
    assert redact(clean) == clean
