"""Keep credentials out of anything printed or logged."""

from __future__ import annotations

import logging
import re

__all__ = ["RedactingFormatter", "redact", "without_queries"]

# A URL's query (presigned URLs carry AccessKeyId and Signature there), and the values of
# the headers and fields that carry credentials.
_URL_QUERY = re.compile(r"(https?://[^\s?#'\"<>]+)\?[^\s#'\"<>]*")
_SECRET_FIELDS = re.compile(
    r"(?i)((?:Signature|AccessKeyId|X-Auth-Token|Access|Credential|(?<![a-z])[as]k|[\w-]*token|"
    r"secret[\w-]*|password)[\"']?\s*[=:]\s*[\"']?)[^\s,;&'\"]+"
)


#: A URL's password (a proxy's: `http://user:password@proxy:3128`), unless masked already.
_URL_USER = re.compile(r"(\w+://[^/\s:@'\"<>]*:)(?!\*\*@)[^/\s@'\"<>]+@")


def redact(text: str) -> str:
    """`text` with URL queries, URL users and credential values replaced by `<redacted>`."""
    text = _URL_USER.sub(r"\1<redacted>@", _URL_QUERY.sub(r"\1?<redacted>", text))
    return _SECRET_FIELDS.sub(r"\1<redacted>", text)


def without_queries(value: object) -> object:
    """`value` (JSON: dicts, lists, strings) with every link's query removed: a presigned
    link's query is its credential, and a link without it still says where the file is."""
    if isinstance(value, str):
        return _URL_QUERY.sub(r"\1", value)
    if isinstance(value, dict):
        return {key: without_queries(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_queries(item) for item in value]
    return value


class RedactingFormatter(logging.Formatter):
    """A logging formatter that redacts each record as formatted: its message, and any
    traceback or stack shown with it."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
