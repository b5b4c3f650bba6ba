"""The library's loggers.

A library logs; it does not print: the "uploader" logger has a NullHandler, so that nothing
reaches a host application's stderr unless it configures logging (the CLI does, for its own
commands). Set here, by every module that logs, rather than in the package's `__init__`:
`uploader --help` then starts without importing logging.
"""

from __future__ import annotations

import logging

__all__ = ["logger"]

logging.getLogger("uploader").addHandler(logging.NullHandler())


def logger(name: str = "uploader") -> logging.Logger:
    """The logger `name` ("uploader", or one below it such as "uploader.api")."""
    return logging.getLogger(name)
