"""The job's upload links: kept in the journal, checked, and refreshed by one update."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from uploader._errors import MalformedAnswerError
from uploader._files import FileKind, kind
from uploader._journal import Journal
from uploader._log import logger
from uploader.api.client import MetaStudioClient
from uploader.api.models import JobDetail, JobUrls
from uploader.api.states import ACCEPTS_VIDEO
from uploader.transfer.engine import stored_object_etag
from uploader.transfer.plan import Piece

__all__ = ["MOVE_POLL", "MOVE_WAIT", "URL_REUSE_SECONDS", "Links"]

log = logger()

#: Presigned links live about 24 h; links older than this are replaced before use.
URL_REUSE_SECONDS = 20 * 3600
#: How long a stored single file is waited for at its download link, and how often asked.
MOVE_WAIT, MOVE_POLL = 30.0, 0.5


class Links:
    """The links of the files `kinds`, as the engine's `UrlSource`.

    `fields` is the create/update body that keeps the job's uploads as they are (the same
    part counts): an update with it issues fresh links without dropping stored parts.
    """

    def __init__(self, *, client: MetaStudioClient, session: aiohttp.ClientSession,
                 journal: Journal, job_id: str, kinds: list[FileKind],
                 fields: dict[str, Any]) -> None:
        self._client, self._session, self._journal = client, session, journal
        self.job_id, self.kinds, self.fields = job_id, kinds, fields
        self.generation = 0
        self._lock = asyncio.Lock()

    def url(self, piece: Piece) -> str:
        link = self._journal.urls[kind(piece.kind).link_field]
        return str(link[piece.number - 1] if isinstance(link, list) else link)

    def usable(self) -> bool:
        """Whether the journal's links cover every file and are fresh enough to reuse."""
        fresh = time.time() - self._journal.urls_issued_at < URL_REUSE_SECONDS
        return fresh and all(self._fits(k, self._journal.urls.get(k.link_field))
                             for k in self.kinds)

    async def adopt(self, answer: JobUrls) -> None:
        """Take the links of a create/update answer, refusing a malformed one."""
        links = {k.link_field: answer.raw.get(k.link_field) for k in self.kinds}
        wrong = [k for k in self.kinds if not self._fits(k, links[k.link_field])]
        if wrong:
            raise MalformedAnswerError(
                f"MetaStudio sent a malformed answer: {self._what(wrong[0], links)}",
                job_id=self.job_id)
        await self._journal.record_urls(links)
        self.generation += 1

    def _what(self, file: FileKind, links: dict[str, Any]) -> str:
        link = links[file.link_field]
        if file.count_field is not None and isinstance(link, list):
            return (f"{len(link)} upload URLs for {self.fields[file.count_field]} parts of the "
                    f"{file.title}")
        return f"no valid {file.link_field} for the {file.title}"

    def _fits(self, file: FileKind, link: Any) -> bool:
        if file.count_field is None:
            return isinstance(link, str) and bool(link)
        return (isinstance(link, list) and len(link) == self.fields[file.count_field]
                and all(isinstance(u, str) and u for u in link))

    async def refresh(self, seen_generation: int) -> None:
        """Fresh links for every file, once however many pieces ask at the same time."""
        async with self._lock:
            if self.generation == seen_generation:
                await self.adopt(await self._client.update_job(self.job_id, **self.fields))

    async def stored_parts(self, file: FileKind) -> dict[int, str]:
        """The parts of a multipart file the server holds, checked to be within 1..count."""
        assert file.list_command is not None and file.count_field is not None
        count = self.fields[file.count_field]
        result = await self._client.command(self.job_id, file.list_command)
        stored = {p.part_number: p.etag for p in result.multipart_data}
        outside = sorted(n for n in stored if not 1 <= n <= count)
        if not result.succeeded or outside:
            what = f"part numbers {outside} outside 1..{count}" if outside else (
                result.excute_failed_msg or f"{file.list_command} failed")
            raise MalformedAnswerError(f"MetaStudio sent a malformed answer: {what}",
                                       job_id=self.job_id)
        return stored

    async def job_detail(self) -> JobDetail:
        """The job as show job tells it now (which files it holds, its state)."""
        return await self._client.show_job(self.job_id)

    async def download_link(self, file: FileKind, *, detail: JobDetail | None = None,
                            wait: bool = True) -> str | None:
        """The download link of a stored file (None: not stored). A single file may reach it
        some time after its PUT (the service moves it from its `_tmp` key): with `wait`, it
        is waited for, up to MOVE_WAIT seconds."""
        detail = detail or await self.job_detail()
        link = detail.raw.get(file.download_field)
        waited = 0.0
        while not link and wait and not file.multipart and waited < MOVE_WAIT:
            if detail.state not in ACCEPTS_VIDEO:
                # Another run submitted the job meanwhile: its review may delete this file
                # (the ID card images), and no move will come.
                log.info("job %s is %s: the %s is not waited for", self.job_id, detail.state,
                         file.title)
                break
            if waited == 0.0:
                log.info("the %s is stored but not yet at its download link: waiting for "
                         "the service to move it", file.title)
            await asyncio.sleep(MOVE_POLL)
            waited += MOVE_POLL
            detail = await self.job_detail()
            link = detail.raw.get(file.download_field)
        return link if isinstance(link, str) and link else None

    async def stored_etag(self, piece: Piece) -> str | None:
        file = kind(piece.kind)
        if file.multipart:
            return (await self.stored_parts(file)).get(piece.number)
        detail = await self.job_detail()
        return await self.file_etag(detail.raw.get(file.download_field))

    async def file_etag(self, download_url: Any) -> str | None:
        """The ETag of a stored single file, from its download link (None: not stored)."""
        if not isinstance(download_url, str) or not download_url:
            return None
        return await stored_object_etag(self._session, download_url)
