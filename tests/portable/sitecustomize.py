"""The portable test tier: with this folder on PYTHONPATH, every Python process of a test run
(pytest, its workers, each `python -m uploader` a test starts) starts without the names that
Windows lacks and `uploader` once relied on, so that the tests here run the code path taken
where they are missing:

- `os.preadv`, `os.pread`, `os.pwrite`, `os.pwritev` ("Availability: Unix");
- `os.O_NOFOLLOW`, `os.O_CLOEXEC`, `os.geteuid` (Windows has none);
- the event loop's `add_signal_handler` (NotImplementedError, as on Windows' loops).

`fcntl` itself stays: filelock, which `uploader` locks with, needs it on Linux (on Windows it
takes `msvcrt`); that no module of `uploader` imports it is the import test's to show
(`tests/test_portable.py`, which hides it as well).
"""

import asyncio
import os

HIDDEN = ("preadv", "pread", "pwrite", "pwritev", "O_NOFOLLOW", "O_CLOEXEC", "geteuid")

for name in HIDDEN:
    if hasattr(os, name):
        delattr(os, name)


def _missing(self, *args, **kwargs):
    raise NotImplementedError("no signal handlers on this loop (the portable tier)")


asyncio.SelectorEventLoop.add_signal_handler = _missing
asyncio.SelectorEventLoop.remove_signal_handler = _missing
