"""The object storage behind the presigned links, as OBS behaves: links in either signed
form (`_links`), single-use PUTs, MD5 ETags (or, with `etag_style="sse"`, ETags of an
encrypted bucket that are not the body's MD5), every answer with `x-obs-request-id` and
`x-obs-id-2` and every error in OBS's XML, paced and faulty links, single files that reach
their download link only `move_delay` seconds after their PUT, and downloads of a job's
stored files.

Keys: `training/<job_id>/<kind>.mp4?partNumber=N&uploadId=U` (a part of a multipart file),
`assets/<job_id>/<kind>_tmp` (a single file, as the seeds' links show), `files/<job_id>/<kind>`
(a stored file, GET only).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
import uuid
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

from uploader.emulator._faults import Faults, cut
from uploader.emulator._links import BUCKET, Denied, LinkSigner, dialect
from uploader.emulator._store import Store

__all__ = ["BUCKET", "SSE_HEADER", "ObjectStorage", "obs_error"]

_CHUNK = 1024 * 1024
_BATCH = 4 * 1024 * 1024
_PART_KEY = re.compile(r"training/([0-9a-f]{32})/([a-z0-9_]+)\.mp4")
_FILE_KEY = re.compile(r"(assets|files|voice)/([0-9a-f]{32})/([a-z0-9_]+)")
#: The header OBS answers for an object stored with server-side encryption (SSE-KMS).
SSE_HEADER = "x-obs-server-side-encryption"


def obs_error(status: int, code: str, message: str, resource: str = "") -> web.Response:
    """An OBS error: XML with Code, Message, RequestId, HostId and Resource, the same request
    id in the `x-obs-request-id` header."""
    request_id, host_id = _ids()
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message><RequestId>{request_id}</RequestId>"
            f"<HostId>{host_id}</HostId><Resource>{escape(resource)}</Resource></Error>")
    return web.Response(status=status, text=body, content_type="application/xml",
                        headers={"x-obs-request-id": request_id, "x-obs-id-2": host_id})


def _ids() -> tuple[str, str]:
    return uuid.uuid4().hex[:16].upper(), uuid.uuid4().hex + uuid.uuid4().hex


class ObjectStorage:
    """Signs links, and takes and serves the objects they point at."""

    def __init__(self, *, signer: LinkSigner, store: Store, faults: Faults,
                 move_delay: float = 0.0, etag_style: str = "md5") -> None:
        if etag_style not in ("md5", "sse"):
            raise ValueError("etag style is md5 or sse")
        self.signer, self.url_ttl = signer, signer.url_ttl
        self.store, self.faults = store, faults
        self.move_delay, self.sse = move_delay, etag_style == "sse"
        self._storing: set[str] = set()  #: links whose PUT is being stored now

    # ---- links ------------------------------------------------------------------------

    def presign(self, request: web.Request, method: str, key: str, *,
                sub: dict[str, str] | None = None, content_type: str = "",
                expires: int | None = None) -> str:
        """A temporary URL for `method` on `key`, signed for `content_type`."""
        return self.signer.presign(request.scheme, request.host, method, key, sub=sub or {},
                                   content_type=content_type,
                                   expires=expires or int(time.time()) + self.url_ttl)

    def download_url(self, request: web.Request, job_id: str, kind: str) -> str:
        return self.presign(request, "GET", f"files/{job_id}/{kind}")

    def _etag(self, md5_hex: str) -> str:
        """The ETag of a stored body: its MD5, or on an encrypted bucket something else."""
        if not self.sse:
            return md5_hex
        return hashlib.sha256(b"sse-kms:" + bytes.fromhex(md5_hex)).hexdigest()[:32]

    def _stored_headers(self, etag: str) -> dict[str, str]:
        headers = {"ETag": f'"{etag}"'}
        if self.sse:
            headers[SSE_HEADER] = "kms"
        return headers

    @staticmethod
    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        """Every storage answer carries OBS's request ids, and every `x-obs-*` header of an
        answer is written in the dialect of the link (on_response_prepare): `x-amz-*` for
        the S3-compatible forms."""
        if not request.path.startswith(f"/{BUCKET}/"):
            return
        if "x-obs-request-id" not in response.headers:
            request_id, host_id = _ids()
            response.headers["x-obs-request-id"] = request_id
            response.headers["x-obs-id-2"] = host_id
        prefix = dialect(request.query)
        if prefix != "x-obs-":
            for name in [n for n in response.headers if n.lower().startswith("x-obs-")]:
                response.headers[prefix + name[len("x-obs-"):]] = response.headers.pop(name)

    # ---- PUT: a part or a single file -------------------------------------------------

    async def expect_continue(self, request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue` answered as OBS does: a link that would be refused
        (spent, expired, badly signed) is refused at once, before the client sends its
        body; otherwise `100 Continue`."""
        if request.headers.get("Expect", "").lower() != "100-continue":
            return web.Response(status=417, text="Unknown Expect")
        key = request.match_info["key"]
        try:
            signature = self.signer.check(request, key)
            if signature in self.store.spent or signature in self._storing:
                raise Denied(403, "AccessDenied", "This URL has already been used")
            self._target(request, key)
        except Denied as exc:
            ledger = self.faults.ledger[(_job_of(key),
                                         _int_or_zero(request.query.get("partNumber")))]
            ledger["attempts"] += 1
            ledger["refused"] += 1
            ledger["refused_early"] += 1  # before the body: it cost a round trip
            response = obs_error(exc.status, exc.code, exc.message, f"/{BUCKET}/{key}")
            response.force_close()  # the body announced is not coming
            return response
        assert request.transport is not None  # as aiohttp's documentation writes it
        request.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    async def put_object(self, request: web.Request) -> web.StreamResponse:
        faults = self.faults
        faults.in_flight += 1
        faults.most_in_flight = max(faults.most_in_flight, faults.in_flight)
        try:
            return await self._put_object(request)
        finally:
            faults.in_flight -= 1

    async def _put_object(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        faults = self.faults
        ledger = faults.ledger[(_job_of(key), _int_or_zero(request.query.get("partNumber")))]
        ledger["attempts"] += 1
        try:
            signature = self.signer.check(request, key)
            if signature in self.store.spent or signature in self._storing:
                raise Denied(403, "AccessDenied", "This URL has already been used")
            commit = self._target(request, key)
        except Denied as exc:
            ledger["refused"] += 1
            await _discard(request, self.faults)
            return obs_error(exc.status, exc.code, exc.message, f"/{BUCKET}/{key}")
        # The first PUT that starts storing holds the link: one at the same time is refused.
        self._storing.add(signature)
        try:
            return await self._store_body(request, key, signature, commit, ledger)
        finally:
            self._storing.discard(signature)

    async def _store_body(self, request: web.Request, key: str, signature: str, commit: Any,
                          ledger: Any) -> web.StreamResponse:
        faults = self.faults
        if faults.draw(faults.fail_rate):
            ledger["failed"] += 1
            await _discard(request, self.faults)
            return obs_error(faults.failure_status(), "ServiceUnavailable",
                             "Please reduce your request rate (injected fault)")
        if faults.draw(faults.reset_rate):
            ledger["reset"] += 1
            with contextlib.suppress(ConnectionError):
                await _body_bytes(request, max(1, (request.content_length or 2) // 2))
            cut(request)
        try:
            received = await self._receive(request)
        except asyncio.CancelledError:
            ledger["cut"] += 1  # the client went away mid-body
            raise
        if received is None:
            ledger["cut"] += 1
            return web.Response(status=400)
        tmp, md5_hex = received
        etag = self._etag(md5_hex)
        if faults.take_corruption(_kind_of(key)):
            await asyncio.to_thread(_flip_first_byte, tmp)
        commit(etag, tmp)
        ledger["stored"] += 1
        self.store.spend(signature)
        if faults.draw(faults.drop_rate):
            ledger["dropped"] += 1
            cut(request)
        return web.Response(status=200, headers=self._stored_headers(etag))

    def _target(self, request: web.Request, key: str) -> Any:
        """Where a received body goes: a function (etag, received file) that commits it."""
        q = request.query
        part = _PART_KEY.fullmatch(key)
        single = _FILE_KEY.fullmatch(key)
        if single is not None and single[1] == "assets" and "uploadId" not in q:
            job_id, kind = single[2], single[3].removesuffix("_tmp")
            if job_id not in self.store.jobs:
                raise Denied(404, "NoSuchBucket", "The job of this link does not exist")
            return lambda etag, tmp: self.store.commit_file(
                job_id, kind, etag, tmp, visible_after=self.move_delay)
        if single is not None and single[1] == "voice" and "uploadId" not in q:
            job_id, kind = single[2], single[3]
            voice = next((j for j in self.store.voice_jobs if j["job_id"] == job_id), None)
            if voice is None and job_id not in self.store.short_jobs:
                raise Denied(404, "NoSuchBucket", "The job of this link does not exist")
            if voice is not None and voice["state"] not in ("UPLOADING", "AUDIT_FAILED"):
                raise Denied(403, "AccessDenied", "The job takes no files in its state")
            return lambda etag, tmp: self.store.commit_file(job_id, kind, etag, tmp)
        job = self.store.jobs.get(part[1]) if part else None
        upload = (job.get("uploads") or {}).get(part[2]) if job and part else None
        if (upload is None or upload["upload_id"] != q.get("uploadId")
                or job is None or job["state"] != "WAIT_FILE_UPLOAD"):
            raise Denied(404, "NoSuchUpload", "The specified upload does not exist")
        number = q.get("partNumber", "")
        if not number.isdigit() or not 1 <= int(number) <= upload["count"]:
            raise Denied(400, "InvalidArgument", "partNumber is out of range")
        upload_id = upload["upload_id"]
        return lambda etag, tmp: self.store.commit_part(upload_id, int(number), etag, tmp)

    async def _receive(self, request: web.Request) -> tuple[Path, str] | None:
        """Stream the body to a temporary file; None (and no file) if it did not all arrive.

        Received data is hashed and written in a worker thread, a batch at a time, so that
        the event loop goes on receiving (hashlib and file writes release the GIL). With a
        link rate set (it may change while a body arrives), the body is read no faster, and
        each read is stored before the next.
        """
        tmp = self.store.new_tmp()
        digest = hashlib.md5(usedforsecurity=False)
        received = 0
        paced_from, paced_bytes = time.monotonic(), 0
        loop = asyncio.get_running_loop()
        try:
            with tmp.open("wb", buffering=0) as out:
                batch: list[bytes] = []
                batched = 0
                while chunk := await self._read(request):
                    await self.faults.pace_total(len(chunk))
                    batch.append(chunk)
                    batched += len(chunk)
                    received += len(chunk)
                    self.faults.received_bytes += len(chunk)
                    rate = self.faults.link_rate
                    # On a paced link each read is stored at once, while the pacing waits:
                    # the body is done when its last byte arrives, as on a real server.
                    if batched >= (_pace_chunk(rate) if rate else _BATCH):
                        await loop.run_in_executor(None, _store_batch, out, digest, batch)
                        batch, batched = [], 0
                    if not rate:
                        paced_from, paced_bytes = time.monotonic(), 0
                        continue
                    paced_bytes += len(chunk)
                    now = time.monotonic()
                    ahead = paced_bytes / rate - (now - paced_from)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                    elif ahead < -_SLACK:
                        # Behind (the sender paused, or this loop was busy): a link does not
                        # bank the time it carried nothing, so no catching up in a burst.
                        paced_from, paced_bytes = now, 0
                await loop.run_in_executor(None, _store_batch, out, digest, batch)
            expected = request.content_length
            if expected is not None and received != expected:
                raise ConnectionResetError("short body")
        except (ConnectionError, asyncio.CancelledError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return None
        return tmp, digest.hexdigest()

    async def _read(self, request: web.Request) -> bytes:
        rate = self.faults.link_rate or self.faults.total_rate
        return await _body_bytes(request, _pace_chunk(rate) if rate else None)

    # ---- GET: a job's stored file -----------------------------------------------------

    async def get_object(self, request: web.Request) -> web.StreamResponse:
        """Serve a stored file with its ETag; a `Range` of bytes answers 206 with that range."""
        key = request.match_info["key"]
        try:
            self.signer.check(request, key)
        except Denied as exc:
            return obs_error(exc.status, exc.code, exc.message, f"/{BUCKET}/{key}")
        match = _FILE_KEY.fullmatch(key)
        stored = (self.store.files(match[2], moved=True).get(match[3])
                  if match and match[1] == "files" and match[2] in self.store.jobs else None)
        if stored is None:
            return obs_error(404, "NoSuchKey", "The specified key does not exist")
        size = stored.size
        try:
            wanted = request.http_range
        except ValueError:
            return obs_error(416, "InvalidRange", "The requested range cannot be satisfied")
        start, stop, _ = wanted.indices(size)
        partial = request.headers.get("Range") is not None
        if partial and start >= stop:
            return obs_error(416, "InvalidRange", "The requested range cannot be satisfied")
        response = web.StreamResponse(status=206 if partial else 200, headers={
            **self._stored_headers(stored.etag), "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes"})
        if partial:
            response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        response.content_length = stop - start
        await response.prepare(request)
        with stored.open() as source:
            source.seek(start)
            remaining = stop - start
            # A client may close the connection before the body is all sent (it had what it
            # wanted, or went away): as on a storage, that is no error of the server's.
            with contextlib.suppress(ConnectionResetError):
                while remaining:
                    chunk = await asyncio.to_thread(source.read, min(_CHUNK, remaining))
                    if not chunk:
                        break
                    await response.write(chunk)
                    remaining -= len(chunk)
                await response.write_eof()
        return response


def _job_of(key: str) -> str:
    parts = key.split("/")
    return parts[1] if len(parts) >= 3 else ""


def _int_or_zero(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


async def _discard(request: web.Request, faults: Faults) -> None:
    """Read a refused request's body to its end (counted: it crossed the wire)."""
    try:
        while chunk := await _body_bytes(request, _CHUNK):
            faults.received_bytes += len(chunk)
    except (ConnectionError, OSError):
        pass


async def _body_bytes(request: web.Request, size: int | None) -> bytes:
    """The next bytes of a request's body (at most `size`; None: whatever has come), b""
    at its end. A body that sends nothing for _IDLE seconds is cut (ConnectionResetError),
    as object storage cuts an idle upload (S3's RequestTimeout): with the small read buffer
    of an emulator started with a link rate, aiohttp (3.14.5) left the connection of a
    client killed mid-body unread for good, whatever the rate later became."""
    try:
        async with asyncio.timeout(_IDLE):
            return await (request.content.readany() if size is None
                          else request.content.read(size))
    except TimeoutError:
        raise ConnectionResetError("the body sent nothing for a while") from None


#: Seconds a body may send nothing before it is cut (see `_body_bytes`).
_IDLE = 5.0
#: Seconds a paced body may fall behind its rate before the pacing forgets it (and no more
#: than this much is read at once to catch up).
_SLACK = 0.02


def _pace_chunk(rate: float) -> int:
    """Bytes to read between pauses on a paced link: about 1/50 s of data, so pacing is
    smooth yet costs the loop at most ~50 wake-ups a second per connection."""
    return max(4096, min(_CHUNK, int(rate / 50)))


def _store_batch(out: Any, digest: Any, batch: list[bytes]) -> None:
    for chunk in batch:
        digest.update(chunk)
        out.write(chunk)


def _kind_of(key: str) -> str:
    """The kind of file a storage key holds: `training/J/training_video.mp4` ->
    training_video, `assets/J/grant_file_tmp` -> grant_file."""
    name = key.rsplit("/", 1)[-1]
    return name.removesuffix(".mp4").removesuffix("_tmp")


def _flip_first_byte(path: Path) -> None:
    with path.open("r+b") as stored:
        first = stored.read(1)
        stored.seek(0)
        stored.write(bytes([first[0] ^ 0xFF]) if first else b"")
