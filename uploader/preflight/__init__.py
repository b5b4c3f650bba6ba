"""Preflight: prove every file of a job would pass MetaStudio's review before a byte is sent.

`video` holds the training (and action) video's rules, `documents` those of the images, the
authorization letter and the zip of recordings; `report` what a check finds. Each file kind
names its rule in `uploader._files`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from pathlib import Path

from uploader._files import FileKind
from uploader.preflight.report import Facts, FileFacts, Problem, Report, ReviewRules
from uploader.preflight.video import ALLOWED_RESOLUTIONS, check_video, check_video_async

__all__ = ["ALLOWED_RESOLUTIONS", "Facts", "FileFacts", "Problem", "Report", "ReviewRules",
           "check_file", "check_files", "check_video", "check_video_async"]


def check_file(kind: FileKind, path: Path, rules: ReviewRules | None = None) -> Report:
    """Check one file of a job by its kind's rule, for a job of `rules`; never raises for a
    bad file."""
    if kind.rule == "video":
        return dataclasses.replace(check_video(path, rules), kind=kind.name)
    # Pillow is loaded by the first file that needs it, not by `uploader check VIDEO`.
    from uploader.preflight.documents import check_audio, check_image, check_letter

    checks = {"image": check_image, "letter": check_letter, "audio": check_audio}
    return checks[kind.rule](path, kind.name).judged(rules or ReviewRules())


async def check_files(files: Mapping[FileKind, Path],
                      rules: ReviewRules | None = None) -> list[Report]:
    """Check every file at once, off the event loop; one report each, in the given order."""
    return list(await asyncio.gather(*(asyncio.to_thread(check_file, kind, path, rules)
                                       for kind, path in files.items())))
