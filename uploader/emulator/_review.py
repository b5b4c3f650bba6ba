"""The emulator's stand-in for MetaStudio's processing: assembling a multipart file on its
confirm, and the automatic review a submitted job goes through (API.md §6)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from pymediainfo import MediaInfo

from uploader._log import logger
from uploader.emulator._store import Store

__all__ = ["MISSING_GRANT_FILE", "MISSING_ID_CARDS", "Reviewer", "assemble", "log_entry", "now",
           "review_video"]

log = logger("uploader.emulator")

ALLOWED = {(1920, 1080), (1080, 1920), (3840, 2160), (2160, 3840)}
#: The emulator's own codes for a job missing a required file (the service documents none).
MISSING_ID_CARDS = "44005904"
MISSING_GRANT_FILE = "44005905"
ID_CARDS = ("id_card_image1", "id_card_image2")


def review_video(source: Path | BinaryIO) -> tuple[str, str] | None:
    """None if the video passes (a path, or the file open); otherwise (error code,
    description)."""
    try:
        info = MediaInfo.parse(source)
    except Exception:  # any parse failure is a refusal, as the service would refuse it
        return "44005903", "the file could not be read as a video"
    general = next((t for t in info.tracks if t.track_type == "General"), None)
    video = next((t for t in info.tracks if t.track_type == "Video"), None)
    if general is None or video is None or general.format != "MPEG-4":
        return "44005903", "the file is not an mp4 video"
    width, height = int(video.width or 0), int(video.height or 0)
    if str(video.rotation or "0").split(".")[0] in ("90", "270", "-90"):
        width, height = height, width
    if (width, height) not in ALLOWED:
        return "44005901", f"resolution {width}x{height} is not accepted"
    seconds = float(general.duration or video.duration or 0) / 1000
    if not 180 <= seconds <= 600:
        return "44005902", f"duration {seconds:.1f} s is outside 3 to 10 minutes"
    return None


def assemble(store: Store, job_id: str, kind: str, parts: list[tuple[Path, str]]) -> None:
    """Make the parts, in order, the job's `kind` file: a folder of hard links to them (no
    byte copied: a confirm of any size takes milliseconds, and the data folder holds each
    byte once; served end to end by `StoredPart.open`). Where hard links cannot be made,
    the parts are concatenated into one file (copy_file_range, in the kernel). Its ETag is
    OBS's for a multipart object: the MD5 of the parts' binary MD5s, a dash, and the number
    of parts."""
    tmp = store.new_tmp()
    try:
        _linked(tmp, [part for part, _ in parts])
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        _concatenated(tmp, [part for part, _ in parts])
    etag = hashlib.md5(b"".join(bytes.fromhex(md5) for _, md5 in parts),
                       usedforsecurity=False).hexdigest()
    try:
        store.commit_file(job_id, kind, f"{etag}-{len(parts)}", tmp)
    except OSError:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _linked(folder: Path, parts: list[Path]) -> None:
    folder.mkdir()
    for number, part in enumerate(parts, start=1):
        os.link(part, folder / f"{number:05d}")


def _concatenated(target: Path, parts: list[Path]) -> None:
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                remaining = os.fstat(src.fileno()).st_size
                while remaining:
                    copied = os.copy_file_range(src.fileno(), out.fileno(), remaining)
                    if copied == 0:
                        raise OSError(f"{part} ended early")
                    remaining -= copied


class Reviewer:
    """Reviews submitted jobs in the background, `delay` seconds each. With `outcome`
    ("STATE" or "STATE:ERROR_CODE"), every review ends in that state instead, for a client to
    be tested against any of them."""

    def __init__(self, store: Store, delay: float, outcome: str | None = None) -> None:
        self.store, self.delay = store, delay
        self.outcome = outcome
        self.tasks: set[asyncio.Task[None]] = set()

    def schedule(self, job: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._review(job["job_id"]))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _review(self, job_id: str) -> None:
        job = self.store.jobs[job_id]
        try:
            await asyncio.sleep(self.delay)
            verdict = await asyncio.to_thread(self._verdict, job_id)
        except Exception as exc:  # a broken review must not leave the job reviewing forever
            log.exception("review of job %s failed", job_id)
            verdict = "44005903", f"the video could not be processed: {exc}"
        if self.outcome is not None:
            state, _, code = self.outcome.partition(":")
            job["state"] = state
            failed = "FAIL" in state or state == "JOB_REJECT"
            job["operation_logs"].append(log_entry(
                "SYSTEM_VERIFY_FAILED" if failed else "SYSTEM_VERIFY_SUCCESS", "SYSTEM",
                code or None, f"the review ended in {state} (--review-outcome)"))
        elif verdict is None:
            job["state"] = "MANUAL_VERIFYING"
            job["operation_logs"].append(log_entry("SYSTEM_VERIFY_SUCCESS", "SYSTEM"))
        else:
            job["state"] = "AUTO_VERIFY_FAILED"
            job["operation_logs"].append(log_entry("SYSTEM_VERIFY_FAILED", "SYSTEM", *verdict))
        for kind in ID_CARDS:  # the identity check is done: the docs say they are deleted
            self.store.delete_file(job_id, kind)
        job["last_update_time"] = now()
        self.store.save()

    def _verdict(self, job_id: str) -> tuple[str, str] | None:
        files = self.store.files(job_id)
        with files["training_video"].open() as video:
            verdict = review_video(video)
        if verdict is not None:
            return verdict
        missing = [kind for kind in ID_CARDS if kind not in files]
        if missing:
            return MISSING_ID_CARDS, f"ID card image(s) missing: {', '.join(missing)}"
        if "grant_file" not in files:
            return MISSING_GRANT_FILE, "the authorization letter is missing"
        return None


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def log_entry(log_type: str, user: str, code: str | None = None,
              description: str | None = None) -> dict[str, Any]:
    """One operation-log entry, stamped now."""
    entry = {"operate_time": now(), "log_type": log_type, "operate_user": user}
    if description:
        entry["log_description"] = description
    if code:
        entry["error_code"] = code
    return entry
