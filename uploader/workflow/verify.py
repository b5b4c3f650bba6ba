"""`verify="download"`: every stored file read back through its download link and compared,
by MD5, with the file on this machine, before the submit.

For a storage whose ETags are not MD5s (an encrypted bucket) this is the only proof that the
bytes arrived as sent. A single file that differs is sent again (fresh links) and read back
once more; the training video (and action video), readable only once assembled, are compared
after their confirm, and a difference stops the run before the submit: their parts cannot be
replaced once confirmed. Downloads are streamed, one chunk at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import aiohttp
from yarl import URL

from uploader._errors import Remedy, TransferError
from uploader._http import http_errors
from uploader._log import logger
from uploader.workflow.links import Links
from uploader.workflow.local import LocalFile

__all__ = ["SAMPLES", "VERIFY_MODES", "sampled_match", "verify_by_download"]

log = logger()

#: "etag": the storage's ETags check each piece as it is stored (where they are MD5s);
#: "download": every file is also read back and compared before the submit.
VERIFY_MODES = ("etag", "download")
_CHUNK = 1024 * 1024
#: Rounds of reading a single file back, sending it again when it differs.
_TRIES = 2
Resend = Callable[[LocalFile], Awaitable[None]]
#: The ranges `sampled_match` compares: the first and the last MiB, and this many ranges of
#: SAMPLE bytes spread between them.
SAMPLES = 32
SAMPLE = 64 * 1024


async def verify_by_download(files: list[LocalFile], *, links: Links,
                             session: aiohttp.ClientSession, resend: Resend) -> set[str]:
    """Read every file back and compare; return the kinds proved. TransferError when a
    multipart file differs, or a single file still differs after being sent again."""
    proved: set[str] = set()
    for file in files:
        local = await asyncio.to_thread(_file_md5, file)
        for attempt in range(_TRIES):
            remote = await _stored_md5(file, links=links, session=session)
            if remote == local:
                proved.add(file.kind.name)
                log.info("the stored %s is the file's bytes (MD5 %s)", file.kind.title, local)
                break
            what = (f"the stored {file.kind.title} differs from {file.path} (MD5 "
                    f"{remote or 'none: not stored'} against {local})")
            if file.kind.multipart:
                raise TransferError(f"{what}: its bytes were changed on the way; nothing was "
                                    "submitted; start the upload over to send it again",
                                    job_id=links.job_id, remedy=Remedy.RESTART)
            if attempt + 1 == _TRIES:
                raise TransferError(f"{what}, even after sending it again", job_id=links.job_id)
            log.warning("%s: sending it again", what)
            await resend(file)
    return proved


async def _stored_md5(file: LocalFile, *, links: Links,
                      session: aiohttp.ClientSession) -> str | None:
    """The MD5 of the file behind its download link (waiting for a single file the service
    has yet to move to it); None when it is not there."""
    link = await links.download_link(file.kind)
    if link is None:
        return None
    digest = hashlib.md5(usedforsecurity=False)
    with http_errors("a stored file's link", job_id=links.job_id):
        async with session.get(URL(link, encoded=True), allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=None, sock_read=60)
                               ) as response:
            if response.status != 200:
                return None
            async for chunk in response.content.iter_chunked(_CHUNK):
                await asyncio.to_thread(digest.update, chunk)
    return digest.hexdigest()


def _file_md5(file: LocalFile) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with file.path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


async def sampled_match(file: LocalFile, link: str, *, session: aiohttp.ClientSession) -> bool:
    """Whether the object behind `link` is `file`, as far as ranged reads of it can tell:
    the same size, the same first and last MiB, the same bytes at SAMPLES places between
    (2.1 MiB read, whatever the size). What recognises a confirmed file on a storage whose
    ETags are not MD5s (an encrypted bucket), where sending it again would be the
    alternative; an edit between the samples is not seen (`verify="download"` reads all)."""
    size = file.size
    edge = min(size, _CHUNK)
    ranges = [(0, edge), (size - edge, edge)]
    step = max(1, (size - 2 * edge) // (SAMPLES + 1))
    ranges += [(edge + step * (n + 1), min(SAMPLE, size - edge - step * (n + 1)))
               for n in range(SAMPLES) if edge + step * (n + 1) < size - edge]
    for offset, length in ranges:
        if length <= 0:
            continue
        stored = await _stored_range(link, offset, length, size, session=session)
        if stored is None or stored != await asyncio.to_thread(_read, file, offset, length):
            return False
    return True


async def _stored_range(link: str, offset: int, length: int, size: int, *,
                        session: aiohttp.ClientSession) -> bytes | None:
    """Bytes `offset` to `offset + length` of the stored object, if it is `size` bytes long
    and the storage answers the range; else None."""
    headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
    with http_errors("a stored file's link"):
        async with session.get(URL(link, encoded=True), headers=headers, allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=60)) as response:
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if response.status != 206 or total != str(size):
                return None  # another size, or a storage that ignores Range: not read
            return await response.read()  # the range's length: at most a MiB


def _read(file: LocalFile, offset: int, length: int) -> bytes:
    with file.path.open("rb") as source:
        source.seek(offset)
        return source.read(length)
