"""The front door: `AsyncClient` and its synchronous twin `Client` (httpx's pair is the model).

A client owns what uploads share: the settings, one HTTP session, one transfer budget
(pieces in flight, bandwidth), the state folder and the transfer configuration. Run as many
uploads through it as you like, at once or one after another, then close it (use it as a
context manager). `upload_video`, `submit_job` and their `_sync` twins are shortcuts that
open a client for one call, as `httpx.get` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import os
import threading
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp

from uploader import _checks as checks
from uploader._errors import UsageError
from uploader._http import new_session
from uploader._job import Job
from uploader._journal import default_state_dir
from uploader._limits import Limits, connections_for
from uploader._progress import Progress
from uploader._voice_job import VoiceJob
from uploader.api.client import DEFAULT_BACKOFF, MetaStudioClient
from uploader.api.models import JobDetail, JobList, VoiceJobList
from uploader.api.settings import Settings
from uploader.api.voice import ShortJob, VoiceDetail
from uploader.transfer.budget import TransferBudget
from uploader.transfer.engine import TransferConfig
from uploader.workflow import Run, SubmitResult, UploadResult, delete, submit, upload
from uploader.workflow.verify import VERIFY_MODES
from uploader.workflow.voice import VoiceResult

__all__ = ["AsyncClient", "Client", "submit_job", "submit_job_sync", "upload_video",
           "upload_video_sync"]

T = TypeVar("T")

class AsyncClient:
    """Uploads to MetaStudio that share one connection pool, budget and state folder.

    `settings` default to the environment's; `limits` (a `Limits`) say what the client may
    use: pieces in flight over every upload (tuned by default), connections, bandwidth,
    retries. Or give a `budget` (shared with other clients of the same event loop, if you
    like; two threads' clients cannot share one) that caps them all, `limits.concurrency`
    then being the most one upload sends at once. `transfer` tunes chunks, timeouts and the
    backoff's waits; `state_dir` holds the resume journals (default: the user's state
    folder); `session`, a caller's aiohttp session, is used and left open (its connector
    sets the connections). Every value is checked at once: UsageError.
    """

    def __init__(self, settings: Settings | None = None, *, limits: Limits | None = None,
                 budget: TransferBudget | None = None,
                 state_dir: str | os.PathLike[str] | None = None,
                 transfer: TransferConfig | None = None, wait_timeout: float = 1800.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        for name, value, kind in (("settings", settings, Settings),
                                  ("limits", limits, Limits),
                                  ("transfer", transfer, TransferConfig),
                                  ("budget", budget, TransferBudget)):
            if value is not None and not isinstance(value, kind):
                raise UsageError(f"{name} must be a {kind.__name__}, not {value!r}")
        self.limits = limits or Limits()
        self.limits.checked_with(budget=budget, session=session)
        self.settings = settings or Settings.from_env()
        base = transfer or TransferConfig()
        self.transfer = dataclasses.replace(base, backoff=self.limits.backoff(base.backoff))
        self.api_backoff = self.limits.backoff(DEFAULT_BACKOFF, first_contact=True)
        self.budget = budget or self.limits.budget()
        self.connections = self.limits.connections or connections_for(self.budget.concurrency)
        self.state_dir = (checks.path(state_dir, "state_dir") if state_dir is not None
                          else default_state_dir())
        self.wait_timeout = checks.number(wait_timeout, "wait_timeout")
        self._given_session = session
        self._stack: contextlib.AsyncExitStack | None = None
        self._run: Run | None = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the HTTP session (done by `async with`, or by the first call)."""
        if self._run is not None:
            return
        self.budget.bind()  # refused here, before any call, if another loop uses it
        stack = contextlib.AsyncExitStack()
        session = self._given_session
        if session is None:
            acked = self.budget.acked
            session = await stack.enter_async_context(new_session(
                self.settings, limit=self.connections,
                socket_factory=acked.socket_factory if acked and acked.available else None))
        api = await stack.enter_async_context(MetaStudioClient(
            self.settings, session=session, backoff=self.api_backoff,
            pace_dir=self.state_dir / "pace"))
        self._stack, self._run = stack, Run(
            api=api, session=session, state_dir=self.state_dir, config=self.transfer,
            pieces=self.limits.pieces, budget=self.budget, wait_timeout=self.wait_timeout)

    async def close(self) -> None:
        """Close the session this client opened (a caller's session is left open)."""
        stack, self._stack, self._run = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _opened(self) -> Run:
        await self.open()
        assert self._run is not None
        return self._run

    async def upload(self, job: Job, *, submit: bool = False, wait: bool = False,
                     restart: bool = False, progress: Progress | None = None,
                     verify: str = "etag") -> UploadResult:
        """Upload `job`'s files, resuming any earlier attempt; confirm them; with `submit`,
        submit the job for review (`wait`: until the automatic review has its outcome).
        `restart` forgets earlier attempts and sends every file (a new job for a name).
        `verify` "download" reads every stored file back and compares it before the
        submit (the proof where the storage's ETags are not MD5s)."""
        if not isinstance(job, Job):
            raise UsageError(f"upload takes a Job, not {job!r}")
        if verify not in VERIFY_MODES:
            raise UsageError(f"verify is one of {', '.join(VERIFY_MODES)}, not {verify!r}")
        return await upload(job, await self._opened(), submit=bool(submit), wait=bool(wait),
                            restart=bool(restart), progress=progress or Progress(),
                            verify=verify)

    async def submit(self, job_id: str, *, wait: bool = False) -> SubmitResult:
        """Submit a job whose files are all stored; with `wait`, follow the review."""
        return await submit(checks.job_id(job_id), (await self._opened()).api, wait=wait,
                            wait_timeout=self.wait_timeout)

    async def delete(self, job_id: str) -> None:
        """Delete a job and its files (JobStateError in a state that does not allow it:
        under review or in training)."""
        await delete(checks.job_id(job_id), (await self._opened()).api)

    async def status(self, job_id: str) -> JobDetail:
        """Everything about one job: its state, files and operation log."""
        return await (await self._opened()).api.show_job(checks.job_id(job_id))

    async def jobs(self, *, state: str | Iterable[str] | None = None, limit: int = 10,
                   offset: int = 0, **query: Any) -> JobList:
        """One page of training jobs (list jobs' filters as keywords: tag, name, ...)."""
        return await (await self._opened()).api.list_jobs(state=state, limit=limit, offset=offset,
                                                 **query)

    async def voices(self, *, limit: int | None = None, offset: int | None = None,
                     **query: Any) -> VoiceJobList:
        """One page of voice training jobs."""
        return await (await self._opened()).api.list_voice_jobs(limit=limit, offset=offset, **query)

    async def voice_upload(self, job: VoiceJob, *, commit: bool = False, wait: bool = False,
                           restart: bool = False, progress: Progress | None = None
                           ) -> VoiceResult:
        """Upload a voice job's recordings and letter, resuming any earlier attempt (the
        server's confirmed sentences and stored files are not sent again); with `commit`,
        commit it (the review starts; `wait`: until the review has its outcome)."""
        from uploader.workflow.voice import voice_upload

        if not isinstance(job, VoiceJob):
            raise UsageError(f"voice_upload takes a VoiceJob, not {job!r}")
        return await voice_upload(job, await self._opened(), commit=bool(commit),
                                  wait=bool(wait), restart=bool(restart),
                                  progress=progress or Progress())

    async def voice_status(self, job_id: str) -> VoiceDetail:
        """One voice job: its state, type, asset and failure."""
        return await (await self._opened()).api.show_voice_job(checks.job_id(job_id))

    async def voice_audit(self, job_id: str) -> dict[str, Any]:
        """A voice job's audit result: the system audit's errors per file, the admin's."""
        return await (await self._opened()).api.voice_audit_result(checks.job_id(job_id))

    async def voice_delete(self, job_id: str) -> None:
        """Delete a voice job (refused while it is reviewed or trained)."""
        await (await self._opened()).api.delete_voice_job(checks.job_id(job_id))

    async def voice_assess(self, recordings: str | os.PathLike[str], *, language: str
                           ) -> ShortJob:
        """Huawei's quality pre-check (VOICE_ASSESS) of a folder or zip of recordings."""
        from uploader.workflow.voice import assess

        if language not in ("CN", "EN"):
            raise UsageError(f"language must be CN or EN, not {language!r}")
        return await assess(checks.path(recordings, "the recordings' path"), language,
                            await self._opened())


class Client:
    """`AsyncClient` for synchronous callers, with the same arguments and methods.

    Its uploads run on an event loop in a thread of its own, so it works from anywhere,
    inside a running event loop too (Jupyter, an async application calling a helper).
    Interrupting a call (Ctrl-C, a time limit) cancels the upload, which keeps its journal.
    Closed, it may be used again: it opens anew, on a new loop (so does `AsyncClient`, in
    whatever loop it is used next).
    """

    def __init__(self, settings: Settings | None = None, *, limits: Limits | None = None,
                 budget: TransferBudget | None = None,
                 state_dir: str | os.PathLike[str] | None = None,
                 transfer: TransferConfig | None = None, wait_timeout: float = 1800.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        self._async = AsyncClient(settings, limits=limits, budget=budget, state_dir=state_dir,
                                  transfer=transfer, wait_timeout=wait_timeout,
                                  session=session)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._call(self._async.open())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the session and stop the client's event loop."""
        if self._loop is None:
            return
        self._call(self._async.close())
        loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        loop.call_soon_threadsafe(loop.stop)
        assert thread is not None
        thread.join()
        loop.close()

    def upload(self, job: Job, *, submit: bool = False, wait: bool = False,
               restart: bool = False, progress: Progress | None = None,
               verify: str = "etag") -> UploadResult:
        """`AsyncClient.upload`."""
        return self._call(self._async.upload(job, submit=submit, wait=wait, restart=restart,
                                             progress=progress, verify=verify))

    def submit(self, job_id: str, *, wait: bool = False) -> SubmitResult:
        """`AsyncClient.submit`."""
        return self._call(self._async.submit(job_id, wait=wait))

    def delete(self, job_id: str) -> None:
        """`AsyncClient.delete`."""
        self._call(self._async.delete(job_id))

    def status(self, job_id: str) -> JobDetail:
        """`AsyncClient.status`."""
        return self._call(self._async.status(job_id))

    def jobs(self, *, state: str | Iterable[str] | None = None, limit: int = 10,
             offset: int = 0, **query: Any) -> JobList:
        """`AsyncClient.jobs`."""
        return self._call(self._async.jobs(state=state, limit=limit, offset=offset, **query))

    def voices(self, *, limit: int | None = None, offset: int | None = None,
               **query: Any) -> VoiceJobList:
        """`AsyncClient.voices`."""
        return self._call(self._async.voices(limit=limit, offset=offset, **query))

    def voice_upload(self, job: VoiceJob, *, commit: bool = False, wait: bool = False,
                     restart: bool = False, progress: Progress | None = None) -> VoiceResult:
        """`AsyncClient.voice_upload`."""
        return self._call(self._async.voice_upload(job, commit=commit, wait=wait,
                                                   restart=restart, progress=progress))

    def voice_status(self, job_id: str) -> VoiceDetail:
        """`AsyncClient.voice_status`."""
        return self._call(self._async.voice_status(job_id))

    def voice_audit(self, job_id: str) -> dict[str, Any]:
        """`AsyncClient.voice_audit`."""
        return self._call(self._async.voice_audit(job_id))

    def voice_delete(self, job_id: str) -> None:
        """`AsyncClient.voice_delete`."""
        self._call(self._async.voice_delete(job_id))

    def voice_assess(self, recordings: str | os.PathLike[str], *, language: str) -> ShortJob:
        """`AsyncClient.voice_assess`."""
        return self._call(self._async.voice_assess(recordings, language=language))

    def _call(self, call: Coroutine[Any, Any, T]) -> T:
        loop = self._running_loop()
        started: list[asyncio.Task[Any]] = []

        async def run() -> T:
            started.append(asyncio.current_task())  # type: ignore[arg-type]
            return await call

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            if started:  # interrupted here: the call unwinds (journals kept) before we go on
                asyncio.run_coroutine_threadsafe(_cancelled(started[0]), loop).result()
            raise

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, daemon=True,
                                            name="uploader-client")
            self._thread.start()
            self._loop = loop
        return self._loop


async def _cancelled(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has unwound."""
    task.cancel()
    await asyncio.wait([task])


async def upload_video(path: str | os.PathLike[str], *, submit: bool = False,
                       wait: bool = False, restart: bool = False,
                       progress: Progress | None = None, settings: Settings | None = None,
                       verify: str = "etag", **options: Any) -> UploadResult:
    """Upload one video and the job's other files with a client of its own: the job's
    fields (`name` or `job_id`, each file by its kind, `tags`, `parts`...) and the
    client's options (`concurrency`, `state_dir`, `transfer`, `budget`, `session`...) as
    keywords. See `AsyncClient.upload`."""
    job, client_options = _split(path, options)
    async with AsyncClient(settings, **client_options) as client:
        return await client.upload(job, submit=submit, wait=wait, restart=restart,
                                   progress=progress, verify=verify)


def upload_video_sync(path: str | os.PathLike[str], *, submit: bool = False,
                      wait: bool = False, restart: bool = False,
                      progress: Progress | None = None, settings: Settings | None = None,
                      verify: str = "etag", **options: Any) -> UploadResult:
    """`upload_video` for synchronous callers (inside a running event loop too)."""
    job, client_options = _split(path, options)
    with Client(settings, **client_options) as client:
        return client.upload(job, submit=submit, wait=wait, restart=restart,
                             progress=progress, verify=verify)


async def submit_job(job_id: str, *, wait: bool = False, settings: Settings | None = None,
                     **options: Any) -> SubmitResult:
    """Submit a job whose files are all stored, with a client of its own."""
    async with AsyncClient(settings, **options) as client:
        return await client.submit(job_id, wait=wait)


def submit_job_sync(job_id: str, *, wait: bool = False, settings: Settings | None = None,
                    **options: Any) -> SubmitResult:
    """`submit_job` for synchronous callers (inside a running event loop too)."""
    with Client(settings, **options) as client:
        return client.submit(job_id, wait=wait)


#: The shortcuts' keywords that are the client's (the others describe the job).
_CLIENT_OPTIONS = frozenset(inspect.signature(AsyncClient).parameters) - {"settings"}


def _split(path: str | os.PathLike[str], options: dict[str, Any]
           ) -> tuple[Job, dict[str, Any]]:
    """The job, and the client's options, of a shortcut's keywords."""
    job = Job.of(path, **{k: v for k, v in options.items() if k not in _CLIENT_OPTIONS})
    return job, {k: v for k, v in options.items() if k in _CLIENT_OPTIONS}
