"""Preflight: prove every file of a job would pass MetaStudio's review before a byte is sent.

`video` holds the training (and action) video's header rules, `documents` those of the
images, the authorization letter and the zip of recordings, `content` the rules on what the
training video and the ID card show (sampled by `frames`); `report` what a check finds. Each
file kind names its rule in `uploader._files`.

The header rules take milliseconds and run before anything is sent; the content rules take
seconds, so `upload` runs them beside the transfer (`check_content`) and they gate the
confirm.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from uploader._files import FileKind
from uploader._log import logger
from uploader.preflight.report import Facts, FileFacts, Problem, Report, ReviewRules
from uploader.preflight.video import ALLOWED_RESOLUTIONS, check_video, check_video_async

__all__ = ["ALLOWED_RESOLUTIONS", "Facts", "FileFacts", "Problem", "Report", "ReviewRules",
           "check_content", "check_content_sync", "check_file", "check_files", "check_video",
           "check_video_async", "content_wanted"]

log = logger()
#: One content analysis at a time in a process: it is CPU work, and a batch's rows queue for
#: it while their transfers (network work) go on.
_ONE_AT_A_TIME = threading.Lock()
_SAID = threading.Event()


def content_wanted(setting: bool | None = None) -> bool:
    """Whether the content rules run: `setting` if given, else the UPLOADER_CONTENT_CHECKS
    setting (on unless `0`); where their packages are missing, said once, and False."""
    from uploader.preflight.content import available, wanted

    if not wanted(setting):
        return False
    missing = available()
    if missing is not None and not _SAID.is_set():
        _SAID.set()
        log.warning("%s", missing)
    return missing is None


def check_file(kind: FileKind, path: Path, rules: ReviewRules | None = None, *,
               content: bool = False) -> Report:
    """Check one file of a job by its kind's rule, for a job of `rules` (with `content`,
    the content rules too, for the kinds that have them); never raises for a bad file."""
    if kind.rule == "video":
        report = dataclasses.replace(check_video(path, rules), kind=kind.name)
    else:
        # Pillow is loaded by the first file that needs it, not by `uploader check VIDEO`.
        from uploader.preflight.documents import check_audio, check_image, check_letter

        checks = {"image": check_image, "letter": check_letter, "audio": check_audio}
        report = checks[kind.rule](path, kind.name).judged(rules or ReviewRules())
    return check_content_sync(report, rules) if content else report


async def check_files(files: Mapping[FileKind, Path], rules: ReviewRules | None = None, *,
                      content: bool = False) -> list[Report]:
    """Check every file at once, off the event loop; one report each, in the given order."""
    return list(await asyncio.gather(*(asyncio.to_thread(check_file, kind, path, rules,
                                                         content=content)
                                       for kind, path in files.items())))


def check_content_sync(report: Report, rules: ReviewRules | None = None) -> Report:
    """`report` with the content rules' findings added, for a training video or an ID
    card's portrait side that decodes; other reports unchanged. A file the
    rules cannot read gets a `content_unchecked` warning, never an exception."""
    if not _analysable(report):
        return report
    from uploader.preflight.content import analyse_id_card, analyse_video

    rules = rules or ReviewRules()
    with _ONE_AT_A_TIME:
        started = time.monotonic()
        try:
            if report.kind == "id_card_front":
                found = analyse_id_card(report.path)
            else:
                rotation = report.facts.rotation if isinstance(report.facts, Facts) else 0
                found = analyse_video(report.path, rules, rotation)
        except Exception as exc:  # a decoder's error on a file the headers passed
            log.debug("content analysis of %s failed", report.path, exc_info=True)
            unchecked = Problem("content_unchecked", f"the content rules could not read the "
                                f"file ({type(exc).__name__}: {exc}); its headers passed")
            return dataclasses.replace(report, warnings=(*report.warnings, unchecked))
    log.info("content rules: %s judged in %.1f s (%d problems, %d warnings)", report.path,
             time.monotonic() - started, len(found.problems), len(found.warnings))
    return dataclasses.replace(report, problems=(*report.problems, *found.problems),
                               warnings=(*report.warnings, *found.warnings)).judged(rules)


def _analysable(report: Report) -> bool:
    """A training video with a picture, or an ID card image that decodes: the content rules
    judge it whatever else its report says (`check` tells every problem at once)."""
    facts, codes = report.facts, {p.code for p in report.problems}
    if report.kind == "training_video":
        return (isinstance(facts, Facts) and facts.width is not None
                and not codes & {"unparseable", "no_video_track"})
    return (report.kind == "id_card_front" and isinstance(facts, FileFacts)
            and facts.format in ("JPEG", "PNG") and not codes)


async def check_content(reports: list[Report], rules: ReviewRules | None = None
                        ) -> list[Report]:
    """`check_content_sync` of each report, in a worker thread (the event loop keeps
    running: an upload's parts go meanwhile)."""
    return [await asyncio.to_thread(check_content_sync, report, rules) for report in reports]
