"""One voice training job, start to end (API.md §7): preflight → the job (the journal's,
else one still UPLOADING under the name, else a new one) → the sentences or the zip → the
letter → commit → follow the review.

The server is the truth on resume: `training-segment`'s confirmed indexes say which sentences
are done, show's `training_input_source_url` / `voice_authorization_url` whether the zip and
the letter are stored. Links are single use: a resumed run asks for fresh ones. Sentences go
in the documented order: sentence i PUT and confirmed before sentence i+1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from uploader._errors import ApiError, JobStateError, PreflightError, UsageError
from uploader._journal import Journal
from uploader._log import logger
from uploader._progress import Progress
from uploader._voice_job import VoiceJob
from uploader.api.voice import ShortJob, VoiceLinks
from uploader.preflight.documents import check_letter
from uploader.preflight.recordings import check_recordings, sentences_of, total_seconds
from uploader.preflight.report import Problem, Report, ReviewRules
from uploader.transfer.engine import Sent, send_pieces
from uploader.transfer.plan import Piece
from uploader.workflow import Run

__all__ = ["VoiceResult", "assess", "voice_upload"]

log = logger()

COMMIT_STEP = "voice-commit"
#: The states in which a voice job takes files; the review's states, followed by `wait`.
TAKES_FILES = frozenset({"UPLOADING", "AUDIT_FAILED"})
REVIEWING = frozenset({"CREATING", "SYSTEM_AUDITING", "AUDITING"})
_TYPES = {"package": "application/zip", "letter": "application/octet-stream",
          "audio": "audio/wav", "text": "text/plain"}


@dataclasses.dataclass(frozen=True)
class VoiceResult:
    """What a voice upload did: the job, what it sent, and where the job stands."""

    job_id: str
    state: str | None
    committed: bool
    sentences_sent: tuple[int, ...]
    files_sent: tuple[str, ...]
    bytes_uploaded: int
    seconds: float
    asset_id: str | None = None
    audit_errors: tuple[dict[str, Any], ...] = ()
    warnings: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["sentences_sent"] = list(self.sentences_sent)
        values["files_sent"] = list(self.files_sent)
        return values


async def voice_upload(job: VoiceJob, run: Run, *, commit: bool, wait: bool, restart: bool,
                       progress: Progress) -> VoiceResult:
    """Upload `job`'s recordings and letter, resuming an earlier attempt; with `commit`,
    commit the job (the review starts); with `wait`, follow the review to its end."""
    rules = ReviewRules(ignore=frozenset(job.ignore))
    reports = await asyncio.to_thread(_preflight, job, rules)
    reports = await _with_durations(job, reports, run, rules)
    refused = [r for r in reports if not r.ok]
    if refused:
        raise PreflightError(*refused)
    warned = tuple({"file": r.kind, **w} for r in reports for w in r.to_json()["warnings"])
    _log_warnings(reports)
    started = time.monotonic()
    service = (run.api.settings.endpoint, run.api.settings.project_id)
    async with Journal(run.state_dir, service=service, job_key=f"voice:{job.name}",
                       video=job.recordings, restart=restart) as journal:
        job_id, links = await _open(job, journal, run, restart=restart)
        await journal.lock_job(job_id)
        sender = _Sender(job, job_id, links, run, progress)
        detail = await run.api.show_voice_job(job_id)
        if COMMIT_STEP not in journal.steps and detail.state in TAKES_FILES:
            await sender.send(detail)
            if commit:
                await run.api.commit_voice_job(job_id)
                await journal.record_step(COMMIT_STEP)
                log.info("voice job %s committed: the review starts", job_id)
        elif detail.state not in TAKES_FILES:
            log.info("voice job %s is %s: its files were committed before", job_id,
                     detail.state)
        committed = COMMIT_STEP in journal.steps or detail.state not in TAKES_FILES
        seconds = round(time.monotonic() - started, 3)
        final = await _follow(run, job_id, wait=wait and committed)
        if committed:
            await journal.remove()
    errors: tuple[dict[str, Any], ...] = ()
    if final.state in ("AUDIT_FAILED", "FAILED", "USER_REVIEW_REJECT"):
        audit = await run.api.voice_audit_result(job_id)
        errors = tuple((audit.get("system_audit_result") or {}).get("errors") or ())
    return VoiceResult(job_id, final.state, committed, tuple(sender.sentences),
                       tuple(sender.files), sender.sent, seconds, final.asset_id, errors,
                       warned)


def _log_warnings(reports: list[Report]) -> None:
    """Each warning once, with the files it concerns (not twenty lines for one advice)."""
    by_code: dict[str, list[str]] = {}
    said: dict[str, str] = {}
    for report in reports:
        for warning in report.warnings:
            by_code.setdefault(warning.code, []).append(report.kind)
            said.setdefault(warning.code, warning.message)
    for code, kinds in by_code.items():
        where = kinds[0] if len(kinds) == 1 else f"{len(kinds)} files ({', '.join(kinds[:3])}" \
            + (", ..." if len(kinds) > 3 else "") + ")"
        log.warning("%s: %s: %s", where, code, said[code])


def _preflight(job: VoiceJob, rules: ReviewRules) -> list[Report]:
    reports = check_recordings(job.recordings, edition=job.edition, language=job.language,
                               rules=rules)
    return [*reports, check_letter(job.grant_file, "grant_file").judged(rules)]


async def _with_durations(job: VoiceJob, reports: list[Report], run: Run,
                          rules: ReviewRules) -> list[Report]:
    """The recordings' total length against the tenant's allowed durations (asked once)."""
    allowed = await run.api.voice_durations()
    low, high = allowed.get(f"{job.edition}_min"), allowed.get(f"{job.edition}_max")
    total = total_seconds(reports)
    if low is None or high is None or low <= total <= high:
        return reports
    whole = reports[0]
    problem = Problem("total_duration", f"the recordings last {total:.0f} s in all; the "
                      f"{job.edition} edition takes {low} to {high} s",
                      measured=f"{total:.1f} s", rule="tenant-duration-cfg: "
                      f"{job.edition}_min {low}, {job.edition}_max {high}",
                      todo="record more or less, as the edition asks")
    whole = dataclasses.replace(whole, problems=(*whole.problems, problem)).judged(rules)
    return [whole, *reports[1:]]


async def _open(job: VoiceJob, journal: Journal, run: Run, *, restart: bool
                ) -> tuple[str, VoiceLinks | None]:
    """The job: the journal's, else one still UPLOADING under the name (the oldest), else a
    new one (recorded before anything is sent). Links only for a new job."""
    api = run.api
    if journal.job_id is not None:
        try:
            detail = await api.show_voice_job(journal.job_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
            log.info("the journal's voice job %s is gone: starting again", journal.job_id)
            await journal.set_aside("its voice job is gone")
        else:
            return detail.job_id, None
    if not restart:
        found = sorted(await api.find_voice_jobs(job.name),
                       key=lambda j: int(j.get("create_time") or 0))
        if found:
            job_id = str(found[0]["job_id"])
            log.info("found voice job %s (%s, UPLOADING) by its name", job_id, job.name)
            await journal.start(job_id)
            return job_id, None
    job_id, links = await api.create_voice_job(job.edition, **job.create_fields)
    await journal.start(job_id)
    log.info("created voice job %s", job_id)
    return job_id, links


class _Sender:
    """Sends what the job lacks, in the documented order, through the transfer engine."""

    def __init__(self, job: VoiceJob, job_id: str, links: VoiceLinks | None, run: Run,
                 progress: Progress) -> None:
        self.job, self.job_id, self.run, self.progress = job, job_id, run, progress
        self.urls = _VoiceUrls(run, job_id, links)
        self.sentences: list[int] = []
        self.files: list[str] = []
        self.sent = 0

    async def send(self, detail: Any) -> None:
        job = self.job
        if job.create_type == "SEGMENT":
            await self._sentences()
        elif not detail.package_stored:
            await self._package()
        if not detail.letter_stored:
            await self._put([self._piece("letter", job.grant_file, "the authorization letter")])
            self.files.append("letter")

    async def _sentences(self) -> None:
        job, api = self.job, self.run.api
        confirmed = await api.confirmed_segments(self.job_id)
        sentences = sentences_of(job.recordings)
        count = job.sentences or 0
        for index in range(count):
            if index in confirmed:
                continue
            sentence = sentences[index]
            assert sentence.audio is not None and sentence.text is not None  # preflight
            await self._put([
                self._piece(f"audio_{index}", job.recordings / sentence.audio,
                            f"sentence {index}'s recording"),
                self._piece(f"text_{index}", job.recordings / sentence.text,
                            f"sentence {index}'s text")])
            answer = await api.confirm_segment(self.job_id, index)
            if not answer.confirmed:
                raise _refused_sentence(job, self.job_id, index, answer.unmatched)
            self.sentences.append(index)
            log.info("sentence %d confirmed", index)

    async def _package(self) -> None:
        job = self.job
        if job.recordings.is_file():
            await self._put([self._piece("package", job.recordings, "the zip of recordings")])
        else:
            with tempfile.TemporaryDirectory(prefix="uploader-voice-") as folder:
                zipped = await asyncio.to_thread(_zip, job.recordings, Path(folder) / "v.zip")
                await self._put([self._piece("package", zipped, "the zip of recordings")])
        self.files.append("package")

    def _piece(self, kind: str, path: Path, label: str) -> Piece:
        content_type = _TYPES[kind.split("_")[0]]
        return Piece(kind, 1, path, 0, path.stat().st_size, content_type, label)

    async def _put(self, pieces: list[Piece]) -> None:
        async def done(piece: Piece, sent: Sent) -> None:
            return None

        await self.urls.ready()
        self.sent += await send_pieces(pieces, session=self.run.session, urls=self.urls,
                                       config=self.run.config, on_bytes=self.progress.on_bytes,
                                       concurrency=2, on_done=done, job_id=self.job_id,
                                       budget=self.run.budget)


class _VoiceUrls:
    """The engine's links for a voice job's pieces; refreshed from uploading-address-url
    when one is refused (spent, expired)."""

    def __init__(self, run: Run, job_id: str, links: VoiceLinks | None) -> None:
        self.run, self.job_id, self.links = run, job_id, links
        self.generation = 0
        self._lock = asyncio.Lock()

    async def ready(self) -> None:
        if self.links is None:
            await self.refresh(self.generation)

    def url(self, piece: Piece) -> str:
        assert self.links is not None
        kind, _, index = piece.kind.partition("_")
        links = self.links
        found = {"package": links.package, "letter": links.letter}.get(kind)
        if kind in ("audio", "text"):
            listed = links.audio if kind == "audio" else links.text
            found = listed[int(index)] if int(index) < len(listed) else None
        if not found:
            raise UsageError(f"the service gave no link for {piece.label} (job "
                             f"{self.job_id}): is the job a {kind} job?", job_id=self.job_id)
        return found

    async def refresh(self, seen_generation: int) -> None:
        async with self._lock:
            if seen_generation == self.generation or self.links is None:
                self.links = await self.run.api.voice_links(self.job_id)
                self.generation += 1

    async def stored_etag(self, piece: Piece) -> str | None:
        return None


def _refused_sentence(job: VoiceJob, job_id: str, index: int,
                      unmatched: tuple[int, ...]) -> PreflightError:
    """A sentence the service did not confirm: what to fix, the job kept."""
    path = job.recordings / f"{index}.wav"
    if index in unmatched:
        problem = Problem("text_mismatch", f"sentence {index}'s text does not match its "
                          "recording (unmatched_index_hit)", rule="the text is exactly what "
                          "is said", todo=f"correct {index}.txt or record {index}.wav again, "
                          "then run the same command: the confirmed sentences are not sent "
                          "again")
    else:
        problem = Problem("not_confirmed", f"the service did not confirm sentence {index}",
                          todo=f"check {index}.wav and {index}.txt, then run the same command")
    return PreflightError(Report(path, None, (problem,), f"sentence {index}"), job_id=job_id)


async def _follow(run: Run, job_id: str, *, wait: bool) -> Any:
    """The job's state; with `wait`, once the review has left its reviewing states."""
    api = run.api
    deadline = time.monotonic() + run.wait_timeout
    detail = await api.show_voice_job(job_id)
    while wait and detail.state in REVIEWING:
        if time.monotonic() > deadline:
            raise JobStateError(f"voice job {job_id} is still {detail.state} after "
                                f"{run.wait_timeout:g} s", job_id=job_id, state=detail.state)
        await asyncio.sleep(0.5)
        detail = await api.show_voice_job(job_id)
    return detail


def _zip(folder: Path, target: Path) -> Path:
    """The recordings' WAV and text files at the zip's root, streamed file by file."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for sentence in sentences_of(folder).values():
            for name in (sentence.audio, sentence.text):
                if name is not None:
                    with (folder / name).open("rb") as source, archive.open(name, "w") as out:
                        shutil.copyfileobj(source, out, 1 << 20)
    return target


async def assess(recordings: Path, language: str, run: Run) -> ShortJob:
    """Huawei's quality pre-check (VOICE_ASSESS) of the recordings: a short job, its zip,
    its commit, and its measures once it has them."""
    api = run.api
    job_id, link = await api.create_assessment(language)
    urls = _OneLink(link)
    with tempfile.TemporaryDirectory(prefix="uploader-voice-") as folder:
        zipped = recordings if recordings.is_file() else await asyncio.to_thread(
            _zip, recordings, Path(folder) / "v.zip")
        piece = Piece("package", 1, zipped, 0, zipped.stat().st_size, _TYPES["package"],
                      "the zip of recordings")

        async def done(piece: Piece, sent: Sent) -> None:
            return None

        await send_pieces([piece], session=run.session, urls=urls, config=run.config,
                          on_bytes=lambda _: None, concurrency=1, on_done=done, job_id=job_id)
    await api.commit_assessment(job_id)
    deadline = time.monotonic() + run.wait_timeout
    result = await api.show_assessment(job_id)
    while result.state not in ("SUCCEED", "FAILED") and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        result = await api.show_assessment(job_id)
    return result


class _OneLink:
    """The single link of a quality check's zip: nothing to refresh it from."""

    generation = 0

    def __init__(self, link: str) -> None:
        self.link = link

    def url(self, piece: Piece) -> str:
        return self.link

    async def refresh(self, seen_generation: int) -> None:
        raise UsageError("the quality check's link was refused; run the check again")

    async def stored_etag(self, piece: Piece) -> str | None:
        return None
