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
from uploader.preflight.report import Facts, FileFacts, Problem, Report
from uploader.preflight.video import ALLOWED_RESOLUTIONS, check_video, check_video_async

__all__ = ["ALLOWED_RESOLUTIONS", "Facts", "FileFacts", "Problem", "Report", "check_file",
           "check_files", "check_video", "check_video_async"]


def check_file(kind: FileKind, path: Path) -> Report:
    """Check one file of a job by its kind's rule; never raises for a bad file."""
    if kind.rule == "video":
        return dataclasses.replace(check_video(path), kind=kind.name)
    # Pillow is loaded by the first file that needs it, not by `uploader check VIDEO`.
    from uploader.preflight.documents import check_audio, check_image, check_letter

    rules = {"image": check_image, "letter": check_letter, "audio": check_audio}
    return rules[kind.rule](path, kind.name)


async def check_files(files: Mapping[FileKind, Path]) -> list[Report]:
    """Check every file at once, off the event loop; one report each, in the given order."""
    return list(await asyncio.gather(*(asyncio.to_thread(check_file, kind, path)
                                       for kind, path in files.items())))
