"""The MetaStudio API client: six calls, one signed send path, errors translated in one place."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from uploader._errors import ApiError, MalformedAnswerError, RefusedError, UnreachableError
from uploader._http import http_errors, new_session
from uploader._log import logger
from uploader._retry import Backoff, retry, retry_after
from uploader.api.credentials import Credentials, Signing, credentials_for
from uploader.api.models import CommandResult, JobDetail, JobList, JobUrls, VoiceJobList
from uploader.api.pace import Pace
from uploader.api.settings import Settings
from uploader.api.signing import DATE_FORMAT, authorization, canonical_query
from uploader.api.voice import VoiceCalls

__all__ = ["DEFAULT_BACKOFF", "MetaStudioClient", "Settle", "answer_lost"]

log = logger("uploader.api")

_JOBS = "/digital-human-training-manage/user/jobs"
_VOICE_JOBS = "/voice-training-manage/user/jobs"
_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
#: API calls are small: retried soon (waits from 0.25 s up to 4 s), for as long as parts
#: are (the window: an outage of the service is ridden out); a warning tells of a long one.
DEFAULT_BACKOFF = Backoff(base=0.25, cap=4.0)
#: What a command that took effect answers when its own answer was lost.
_TOOK_EFFECT = {"commond_result": "EXCUTE_SUCCESS"}
Settle = Callable[[], Awaitable[bool]]



class MetaStudioClient(VoiceCalls):
    """Async client of the MetaStudio training-job API.

    Give it a `session` to share connections, `clock` and `sleep` to control time in tests.
    It signs with what its `credentials` (default: those the settings name) give it before
    each request, and asks them once more after a 401 (temporary keys that expired, a
    rotated token). Each API is paced to the service's flow control (`pace`). Redirects are
    never followed: the API does not redirect, and a 3xx would carry signed headers away.
    Every call is retried with `backoff` on 429 (honouring Retry-After) and when it cannot
    have reached the service (connection refused); idempotent calls (GET, update,
    GET_MULTIPART_UPLOADED) also on 5xx, timeouts and lost answers. Create, confirm and
    submit are not: a lost answer to them cannot be told from a lost request.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        credentials: Credentials | None = None,
        pace_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        #: Where the paces are shared with the other processes of this user (None: in this
        #: process only); `uploader.AsyncClient` gives its state folder's.
        self.pace_dir = pace_dir
        self._credentials = credentials or credentials_for(settings)
        self._session = session
        self._owns_session = session is None
        self.backoff = backoff
        self._answered = False  # by the service, once: the backoff's window applies from then
        self._clock = clock
        self._sleep = sleep
        self._base = f"{settings.endpoint}/v1/{quote(settings.project_id, safe='')}"
        self._host = urlsplit(settings.endpoint).netloc.rpartition("@")[2]

    async def __aenter__(self) -> MetaStudioClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client made it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def create_job(
        self, name: str, *, video_multipart_count: int = 1, **fields: Any
    ) -> JobUrls:
        """Create a training job; the answer holds one upload URL per part."""
        body = {"name": name, "video_multipart_count": video_multipart_count, **fields}
        data = await self._call("POST", _JOBS, body=body, idempotent=False, api="create")
        return JobUrls.from_json(data)

    async def list_jobs(
        self, *, offset: int | None = None, limit: int | None = None,
        state: str | Iterable[str] | None = None, **query: Any,
    ) -> JobList:
        """List training jobs, newest first unless `sort_dir` says otherwise."""
        if state is not None and not isinstance(state, str):
            state = ",".join(state)
        params = {"offset": offset, "limit": limit, "state": state, **query}
        data = await self._call("GET", _JOBS, query=_present(params), api="list")
        return JobList.from_json(data)

    async def show_job(self, job_id: str) -> JobDetail:
        """Everything about one job, with its operation log."""
        data = await self._call("GET", _job_path(job_id), job_id=job_id)
        return JobDetail.from_json(data)

    async def update_job(
        self, job_id: str, *, video_multipart_count: int | None = None, **fields: Any
    ) -> JobUrls:
        """Update a job; with `video_multipart_count` it issues fresh upload URLs."""
        body = _present({"video_multipart_count": video_multipart_count, **fields})
        data = await self._call("PUT", _job_path(job_id), body=body, job_id=job_id,
                                api="update")
        return JobUrls.from_json(data, job_id=job_id)

    async def delete_job(self, job_id: str) -> None:
        """Delete a job and its files. A lost answer is settled by asking whether the job is
        still there; the call is sent again only if it is."""
        async def gone() -> bool:
            try:
                await self.show_job(job_id)
            except RefusedError as exc:
                if exc.status == 404:
                    return True
                raise
            return False

        await self._call("DELETE", _job_path(job_id), idempotent=False, job_id=job_id,
                         settle=gone, what=f"delete job {job_id}", api="delete")

    async def command(self, job_id: str, command: str, *, settle: Settle | None = None,
                      **fields: Any) -> CommandResult:
        """Run a job command such as GET_MULTIPART_UPLOADED or CONFIRM_MULTIPART_UPLOADED.

        A command that is not a GET_ is not sent again blindly after a lost answer: with
        `settle`, a check that it took effect (the service is asked), it is sent again only
        when it did not; a command that took effect answers as if it had succeeded."""
        data = await self._call(
            "POST", f"{_job_path(job_id)}/command", body={"command": command, **fields},
            idempotent=command.startswith("GET_"), job_id=job_id, settle=settle, what=command,
            api="command",
        )
        return CommandResult.from_json(data)

    async def list_voice_jobs(
        self, *, offset: int | None = None, limit: int | None = None, **query: Any
    ) -> VoiceJobList:
        """List voice training jobs."""
        data = await self._call(
            "GET", _VOICE_JOBS, query=_present({"offset": offset, "limit": limit, **query}),
            api="list",
        )
        return VoiceJobList.from_json(data)

    async def _call(
        self, method: str, path: str, *, query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None, idempotent: bool = True, job_id: str | None = None,
        settle: Settle | None = None, what: str | None = None, api: str = "show",
    ) -> dict[str, Any]:
        """Send one call, retried by the one policy (`backoff`): the only retry loop of an
        API call. With `settle`, a lost answer is retried only once the service has been
        asked and said the call did not take effect."""
        pairs = [(k, str(v).lower() if isinstance(v, bool) else str(v))
                 for k, v in (query or {}).items()]
        payload = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        what = what or f"{method} {path}"

        pace = Pace.of(self.settings, api, self.pace_dir)

        async def attempt() -> dict[str, Any]:
            await pace.turn()
            try:
                answer = await _told(pace, self._signed(method, path, pairs, payload, job_id))
            except (ApiError, UnreachableError) as exc:
                self._answered = self._answered or exc.status is not None
                if settle is not None and answer_lost(exc) and await settle():
                    log.info("the answer to %s was lost, but it took effect", what)
                    return dict(_TOOK_EFFECT)
                raise
            self._answered = True
            return answer

        def retryable(exc: Exception) -> bool:
            if isinstance(exc, RefusedError) and exc.status == 429:
                return True  # not carried out: the gateway turned it away
            if isinstance(exc, UnreachableError) and not exc.may_have_arrived:
                return not exc.lasting
            return (idempotent or settle is not None) and answer_lost(exc)

        backoff = self.backoff if self._answered else self.backoff.before_first_answer()
        return await retry(attempt, backoff=backoff, retryable=retryable, what=what,
                           sleep=self._sleep)

    async def _signed(self, method: str, path: str, query: list[tuple[str, str]],
                      payload: bytes, job_id: str | None) -> dict[str, Any]:
        """Send with the credentials' current signing; after a 401, once more if they have
        something new (refreshed temporary keys, a rotated token)."""
        signing = await self._credentials.current()
        try:
            return await self._send(method, path, query, payload, job_id, signing)
        except RefusedError as exc:
            if exc.status != 401 or not await self._credentials.refresh(signing):
                raise
        log.debug("%s %s: HTTP 401; sending again with refreshed credentials", method, path)
        return await self._send(method, path, query, payload, job_id,
                                await self._credentials.current())

    async def _send(
        self, method: str, path: str, query: list[tuple[str, str]], payload: bytes,
        job_id: str | None, signing: Signing,
    ) -> dict[str, Any]:
        url = f"{self._base}{path}"
        query_string = canonical_query(query)
        headers = self._headers(method, urlsplit(url).path, query, payload, signing)
        full = URL(f"{url}?{query_string}" if query_string else url, encoded=True)
        with http_errors(f"MetaStudio at {self.settings.endpoint}", job_id=job_id):
            async with self._get_session().request(
                method, full, data=payload or None, headers=headers, timeout=_TIMEOUT,
                allow_redirects=False,
            ) as response:
                raw = await response.read()
        log.debug("%s %s: HTTP %s, request id %s", method, urlsplit(url).path,
                  response.status, response.headers.get("X-Request-Id"))
        if 300 <= response.status < 400:
            raise _redirect(response, job_id)
        return _decode(response, raw, job_id)

    def _headers(
        self, method: str, path: str, query: list[tuple[str, str]], payload: bytes,
        signing: Signing,
    ) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Host": self._host}
        if self.settings.app_user_id:
            headers["X-App-UserId"] = self.settings.app_user_id
        if signing.token is not None:
            headers["X-Auth-Token"] = signing.token
            return headers
        assert signing.ak is not None and signing.sk is not None
        now = self._clock()
        headers["X-Sdk-Date"] = now.strftime(DATE_FORMAT)
        headers["X-Project-Id"] = self.settings.project_id
        if signing.security_token is not None:  # temporary keys: the token is signed too
            headers["X-Security-Token"] = signing.security_token
        headers["Authorization"] = authorization(
            method=method, path=path, query=query, headers=headers, body=payload,
            ak=signing.ak, sk=signing.sk, date=now,
        )
        return headers

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session(self.settings)
        return self._session


def _redirect(response: aiohttp.ClientResponse, job_id: str | None) -> RefusedError:
    """A 3xx from the API: refused, not followed (nothing is sent to where it points)."""
    where = urlsplit(response.headers.get("Location", "")).netloc.rpartition("@")[2]
    return RefusedError(f"MetaStudio answered a redirect to {where or 'nowhere'}, which is "
                        "not followed (the API does not redirect): check METASTUDIO_ENDPOINT "
                        "and any proxy", status=response.status,
                        request_id=response.headers.get("X-Request-Id"), job_id=job_id)


async def _told(pace: Pace, call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """`call`'s answer, the pace told how it went: answered, refused (429), or gone with no
    answer (whatever ended it: no answer, keys that could not be had, a cancellation)."""
    try:
        answer = await call
    except ApiError as exc:
        if isinstance(exc, RefusedError) and exc.status == 429:
            pace.refused(exc.error_msg, exc.retry_after)
        else:
            pace.answered()
        raise
    except BaseException:
        pace.gone()
        raise
    pace.answered()
    return answer


def answer_lost(exc: Exception) -> bool:
    """Whether a call's fate is unknown: no answer, or a server error (asking the service
    then tells what happened). A refusal or a malformed answer is an answer."""
    return isinstance(exc, UnreachableError) or (
        isinstance(exc, RefusedError) and (exc.status or 0) >= 500)


def _job_path(job_id: str) -> str:
    return f"{_JOBS}/{quote(job_id, safe='')}"


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _decode(response: aiohttp.ClientResponse, raw: bytes, job_id: str | None) -> dict[str, Any]:
    request_id = response.headers.get("X-Request-Id")
    if response.status == 204 or (response.status == 200 and not raw):
        return {}  # delete's answer (no content); a voice commit's (200, an empty body)
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if response.status < 400:
        if not isinstance(data, dict):
            raise MalformedAnswerError(
                "MetaStudio sent a malformed answer: not a JSON object",
                status=response.status, request_id=request_id, job_id=job_id,
            )
        return data
    if isinstance(data, dict):
        code, msg = data.get("error_code"), data.get("error_msg")
        error = RefusedError(
            f"MetaStudio refused the request: {msg or 'no message'}",
            status=response.status, error_code=str(code) if code else None,
            error_msg=str(msg) if msg else None, request_id=request_id, job_id=job_id)
    else:
        kind = response.content_type or "no content type"
        error = RefusedError(
            f"MetaStudio answered HTTP {response.status} without a JSON error ({kind})",
            status=response.status, request_id=request_id, job_id=job_id)
    error.retry_after = retry_after(response.headers.get("Retry-After"))
    raise error

