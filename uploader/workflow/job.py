"""Recovery: which job this run works on, and what an earlier run already did for it.

A journal from an earlier run names the job (and its files must still be the same files);
without one, a name finds the job an earlier run created for the same video (by its content
tag: another machine's run, or one killed before it could record the job), or creates one;
a job id is checked to take files. Submitting refuses, before any link is spent, a job that
would lack a file the review requires.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from uploader import _files
from uploader._errors import (
    ApiError,
    FileChangedError,
    JobStateError,
    JournalError,
    MissingFilesError,
    RefusedError,
    Remedy,
    UnreachableError,
    UsageError,
)
from uploader._files import TRAINING_VIDEO
from uploader._job import Job
from uploader._journal import FileIdentity, Journal
from uploader._log import logger
from uploader.api.client import MetaStudioClient
from uploader.api.models import JobDetail
from uploader.api.options import create_fields, update_fields
from uploader.api.states import ACCEPTS_VIDEO, REVIEW_FAILED, explain_state
from uploader.workflow.finish import SUBMIT_STEP
from uploader.workflow.links import Links
from uploader.workflow.local import LocalFile
from uploader.workflow.send import confirm_step

__all__ = ["Next", "OpenJob", "content_tag", "next_step", "open_job", "refuse_missing",
           "refuse_unchangeable", "stored_kinds"]

log = logger()



@dataclass
class OpenJob:
    """The job this run works on, and its links."""

    job_id: str
    links: Links
    created: bool = False  # by this run


class Next(enum.Enum):
    """What a run does with a job it found, once it knows the job's state."""

    NOTHING = "an earlier run of this command submitted it"
    RECORD_SUBMITTED = "it left WAIT_FILE_UPLOAD after a run of this command: it was submitted"
    REFUSE = "its state does not allow taking files"
    NEW_LINKS = "get fresh links by an update"
    REUSE_LINKS = "reuse the links an earlier run recorded"


def next_step(state: str, *, submitted: bool, confirmed: bool, adopted: bool,
              review_failed: bool, links_usable: bool) -> Next:
    """What to do with a job found in `state`. Pure: `submitted`/`confirmed` say what the
    journal recorded, `adopted` that the job was found by this command's content tag."""
    if submitted:
        return Next.NOTHING
    if state not in ACCEPTS_VIDEO:
        # The job a run of this command made for this video (found by its tag), or one whose
        # files an earlier run confirmed before it was cut short in the submit.
        return Next.RECORD_SUBMITTED if adopted or confirmed else Next.REFUSE
    return Next.NEW_LINKS if review_failed or not links_usable else Next.REUSE_LINKS


async def open_job(job: Job, files: list[LocalFile], *, restart: bool, submit: bool,
                   journal: Journal, client: MetaStudioClient, session: aiohttp.ClientSession
                   ) -> tuple[OpenJob, list[LocalFile]]:
    """The job and its links, and the files as this run will send them (a resumed training
    video keeps the plan it was started with)."""
    job_id = job.job_id
    detail: JobDetail | None = None
    if journal.header is not None:
        detail = await _job_of_journal(journal, client, job)
        if detail is not None:
            files = _check_journal(journal, files, job.explicit_plan)
            job_id = detail.job_id
    fields = _fields(files) | update_fields(job.options)

    def links_for(job_id: str) -> Links:
        return Links(client=client, session=session, journal=journal, job_id=job_id,
                     kinds=[f.kind for f in files], fields=fields)

    adopted = False
    if job_id is None:
        assert job.name is not None
        tag = content_tag(job.name, files[0].identity)
        if not restart:
            job_id = await _job_tagged(tag, client)
            adopted = job_id is not None
        if job_id is None:
            created = await _create(job, tag, files, fields, submit=submit, journal=journal,
                                    client=client, links_for=links_for, alone=restart)
            if isinstance(created, OpenJob):
                return created, files
            job_id, adopted = created, True  # another run's job, made at the same moment

    await journal.lock_job(job_id)
    if detail is None and adopted and job.name is not None:
        job_id, detail = await _still_there(job_id, content_tag(job.name, files[0].identity),
                                            client, journal)
    detail = detail or await client.show_job(job_id)
    refuse_unchangeable(job, detail)
    links = links_for(job_id)
    step = _next_for(detail, journal, files, adopted=adopted, links=links)
    await _take(step, detail, journal, files, submit=submit)
    if step is Next.REUSE_LINKS and _options_changed(job, detail):
        # An option the update may change (background replacement, after the content rules
        # refused a real-scene video): sent with fresh links; the stored parts stay.
        log.info("updating job %s's options", job_id)
        step = Next.NEW_LINKS
    if step is Next.NEW_LINKS:
        await links.adopt(await client.update_job(job_id, **fields))
    elif step is Next.REUSE_LINKS:
        log.info("reusing the links issued earlier")
    return OpenJob(job_id, links), files


def _options_changed(job: Job, detail: JobDetail) -> bool:
    """Whether `job` asks the existing job for a flag the update can change, and the job
    holds another value."""
    asked = update_fields(job.options)
    flags = ("is_background_replacement", "is_only_human_model")
    return any(key in asked and detail.raw.get(key) is not None
               and asked[key] != detail.raw.get(key) for key in flags)


def refuse_unchangeable(job: Job, detail: JobDetail) -> None:
    """UsageError if `job` asks an existing job for a model version or an edition other than
    its own: the API cannot change them on update (API.md §2), and leaving them unsaid would
    train another model than the one asked for."""
    raw = detail.raw
    held = {"model_version": raw.get("model_version") or "V3.2",
            "edition": "fast-flexus" if raw.get("is_fast_flexus") else
                       "flexus" if raw.get("is_flexus") else "standard"}
    asked = {"model_version": job.options.model_version, "edition": job.options.edition}
    differ = [key for key, value in asked.items() if value is not None and value != held[key]]
    if differ:
        said = " and ".join(f"{key} {asked[key]} (it is {held[key]})" for key in differ)
        raise UsageError(f"job {detail.job_id} cannot take {said}: an existing job keeps the "
                         "model version and edition it was created with; create a new job "
                         "(give a name instead of the job id) to train another",
                         job_id=detail.job_id)


def _next_for(detail: JobDetail, journal: Journal, files: list[LocalFile], *, adopted: bool,
              links: Links) -> Next:
    """`next_step` for the job found, from what the journal recorded."""
    resumable = journal.header is not None
    return next_step(
        detail.state, submitted=resumable and SUBMIT_STEP in journal.steps,
        confirmed=resumable and all(confirm_step(f.kind.name) in journal.steps
                                    for f in files if f.kind.confirm_command is not None),
        adopted=adopted, review_failed=detail.state in REVIEW_FAILED,
        links_usable=links.usable())


async def _take(step: Next, detail: JobDetail, journal: Journal, files: list[LocalFile], *,
                submit: bool) -> None:
    """Refuse the job, or make it this run's: in the journal before any link is spent."""
    job_id = detail.job_id
    if step is Next.REFUSE:
        raise JobStateError(
            f"job {job_id} is in state {detail.state} ({explain_state(detail.state)}): it "
            "cannot take files now; only WAIT_FILE_UPLOAD, AUTO_VERIFY_FAILED and "
            "MANUAL_VERIFY_FAILED can", job_id=job_id, state=detail.state)
    if step is Next.NOTHING:
        return
    if step is not Next.RECORD_SUBMITTED and submit:
        refuse_missing(files, stored=stored_kinds(detail), job_id=job_id)
    if journal.header is None:
        await journal.start(job_id)
    if step is Next.RECORD_SUBMITTED:
        log.info("job %s was submitted by an earlier run (state %s)", job_id, detail.state)
        await journal.record_step(SUBMIT_STEP)
    else:
        await _record_files(journal, files)


async def _create(job: Job, tag: str, files: list[LocalFile], fields: dict[str, Any], *,
                  submit: bool, journal: Journal, client: MetaStudioClient,
                  links_for: Callable[[str], Links], alone: bool = False) -> OpenJob | str:
    """A new job for `job`, carrying its content tag; recorded before anything is sent. Or,
    when another run (another machine) created one for the same video at the same moment
    and its job wins (`_winner`), this run's job deleted and the winner's id returned.
    `alone` (a restart, which wants a job of its own beside the earlier one) skips that."""
    assert job.name is not None
    if submit:
        refuse_missing(files, stored=set(), job_id=None)
    labels = job.labels
    labels["tags"] = [tag, *labels.get("tags", ())]
    answer = await client.create_job(job.name, **labels,
                                     **(fields | create_fields(job.options)))
    winner = answer.job_id if alone else await _winner(tag, answer.job_id, client)
    if winner != answer.job_id:
        await _give_up_job(answer.job_id, winner, client)
        return winner
    await journal.lock_job(answer.job_id)
    await journal.start(answer.job_id)
    await _record_files(journal, files)
    links = links_for(answer.job_id)
    await links.adopt(answer)
    log.info("created job %s", answer.job_id)
    return OpenJob(answer.job_id, links, created=True)


def _fields(files: list[LocalFile]) -> dict[str, Any]:
    """The create/update fields for these files: part counts, and what a kind needs."""
    fields: dict[str, Any] = {}
    for file in files:
        if file.kind.count_field is not None:
            fields[file.kind.count_field] = file.plan.count
        fields.update(file.kind.create_fields)
    return fields


def stored_kinds(detail: JobDetail) -> set[str]:
    """The kinds of file the job holds, as show job tells; after a failed review, those
    the review deletes are gone whatever show job still says."""
    failed = detail.state in REVIEW_FAILED
    return {k.name for k in _files.KINDS if detail.raw.get(k.download_field)
            and not (failed and (k.deleted_by_review or k is TRAINING_VIDEO))}


def refuse_missing(files: list[LocalFile], *, stored: set[str], job_id: str | None) -> None:
    """MissingFilesError if a file the review requires is neither in `files` nor stored."""
    given = {f.kind.name for f in files}
    missing = [k for k in _files.KINDS if k.required and k.name not in given | stored]
    if missing:
        names = ", ".join(f"the {k.title} ({k.name})" for k in missing)
        raise MissingFilesError(
            f"the review needs {names}: give it, or upload it to the job first; nothing was "
            "sent", kinds=tuple(k.name for k in missing), job_id=job_id)


async def _job_of_journal(journal: Journal, client: MetaStudioClient,
                          request: Job) -> JobDetail | None:
    """The job an earlier run's journal names; None, the journal set aside, when the
    service does not know it (the journal is another service's, or the job was deleted)."""
    assert journal.job_id is not None
    job_id = journal.job_id
    await journal.lock_job(job_id)
    try:
        return await client.show_job(job_id)
    except ApiError as exc:
        if exc.status != 404:
            raise
        await journal.set_aside(f"{client.settings.endpoint} does not know job {job_id}")
        if request.job_id is not None:
            raise JournalError(f"job {job_id} is not known to {client.settings.endpoint} "
                               f"(HTTP 404): check the job id and the endpoint and project "
                               "settings", job_id=job_id) from exc
        log.warning("uploading to a new job named %s", request.name)
        return None


async def _record_files(journal: Journal, files: list[LocalFile]) -> None:
    for file in files:
        if journal.files.get(file.kind.name) != (file.identity, file.plan.sizes):
            await journal.record_file(file.kind.name, file.identity, file.plan.sizes)


def _check_journal(journal: Journal, files: list[LocalFile],
                   explicit_plan: bool) -> list[LocalFile]:
    """The files, each checked against the journal; a resumed multipart file keeps the plan
    it was started with unless the caller asked for another."""
    checked = []
    for file in files:
        recorded = journal.files.get(file.kind.name)
        if recorded is None:
            checked.append(file)
            continue
        identity, sizes = recorded
        if identity != file.identity:
            raise FileChangedError(
                f"{file.path} changed since its upload to job {journal.job_id} began (size, "
                "time or content differ): start the upload over to send it from the start",
                job_id=journal.job_id)
        if sizes != file.plan.sizes:
            if explicit_plan and file.kind is TRAINING_VIDEO:
                raise UsageError(
                    f"an upload of this file to job {journal.job_id} is under way in "
                    f"{len(sizes)} parts: resume it with the plan it began with (no number of "
                    "parts or part size), or start it over with the new plan",
                    job_id=journal.job_id, remedy=Remedy.RESTART)
            file = replace(file, plan=type(file.plan)(file.plan.file_size, sizes))
        checked.append(file)
    return checked


def content_tag(name: str, identity: FileIdentity) -> str:
    """The tag of the job this tool creates for `name` and this video: the same on any
    machine for the same content (its size and a hash of its first and last MiB) and name,
    so that a later run, here or elsewhere, finds the job instead of creating another."""
    row = f"{identity.size}\0{identity.edges_sha256}\0{name}".encode()
    return "uploader-" + hashlib.sha256(row, usedforsecurity=False).hexdigest()[:24]


async def _winner(tag: str, ours: str, client: MetaStudioClient) -> str:
    """The job every run that created one for this tag at the same moment agrees on: the
    first the service made, by its own order of creation (listed oldest first). Listed once
    more after the create: a run whose lookup raced another's sees both jobs now; a run that
    saw only its own job made it first, and the others see it first too. (Creation times
    are whole seconds: two jobs of one second are told apart only by the service's order;
    their ids would not do, as a run that listed before the other created cannot know of
    the other's id.)"""
    page = await client.list_jobs(tag=tag, limit=100, sort_key="create_time", sort_dir="asc")
    found = [job for job in page.jobs if tag in (job.raw.get("tags") or [])]
    if ours not in {job.job_id for job in found}:
        return ours  # not listed yet (a lagging index): the others will see it later
    return found[0].job_id


async def _give_up_job(ours: str, winner: str, client: MetaStudioClient) -> None:
    """Delete this run's job, which lost to `winner`: nothing was sent to it."""
    log.warning("another run created job %s for this video at the same moment; this run's "
                "job %s is deleted, and the upload goes on with %s", winner, ours, winner)
    try:
        await client.delete_job(ours)
    except (ApiError, UnreachableError) as exc:
        log.warning("job %s could not be deleted (%s); it is empty and may be deleted",
                    ours, exc)


async def _still_there(job_id: str, tag: str, client: MetaStudioClient,
                       journal: Journal) -> tuple[str, JobDetail]:
    """The job found by its tag, as it stands; if it is gone (a run that lost a race to
    create deleted its own job between our lookup and now), the job the tag names now."""
    for _ in range(3):
        try:
            return job_id, await client.show_job(job_id)
        except RefusedError as exc:
            if exc.status != 404:
                raise
        log.info("job %s, found by its tag, was deleted by the run that made it (it lost a "
                 "race to another); looking again", job_id)
        found = await _job_tagged(tag, client, besides={job_id})
        if found is None:
            break
        job_id = found
        await journal.lock_job(job_id)
    return job_id, await client.show_job(job_id)


async def _job_tagged(tag: str, client: MetaStudioClient,
                      besides: set[str] | None = None) -> str | None:
    """The job carrying `tag` (exactly), if any (and none of `besides`): made by an earlier
    run of this command, which may have stopped before it could record it. The oldest, by
    the service's own order of creation: the one runs that raced to create one agree on
    (`_winner`), so that a run looking after they created and before the losers deleted
    theirs takes the winner's, not a job about to go."""
    page = await client.list_jobs(tag=tag, limit=100, sort_key="create_time", sort_dir="asc")
    found = [job for job in page.jobs if tag in (job.raw.get("tags") or [])
             and job.job_id not in (besides or set())]
    if not found:
        return None
    job = found[0]
    log.info("continuing with job %s, which an earlier run of this command created for "
                "this video", job.job_id)
    return job.job_id
