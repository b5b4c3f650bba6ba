"""The rules for the job's other files: images, the authorization letter, the recordings.

Images must be JPEG or PNG by content (whatever the name says) and decode in full: MediaInfo
reads headers only and passes a truncated image, so Pillow decodes every pixel. The letter is
a PDF (header and end-of-file marker present) or an image by the image rules. The recordings
are a zip whose entries are all WAV or MP3, by content, with intact CRCs.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from uploader.preflight.report import FileFacts, Problem, Report, refuse_as_a_file

__all__ = ["MAX_SIDE", "MIN_SIDE", "check_audio", "check_image", "check_letter"]

#: An image side shorter than this cannot show an ID card legibly; longer is no photo.
MIN_SIDE = 100
MAX_SIDE = 10_000
_PDF_TAIL = 2048


def check_image(path: Path, kind: str = "cover") -> Report:
    """A JPEG or PNG that decodes in full, each side MIN_SIDE to MAX_SIDE pixels."""
    refusal = refuse_as_a_file(path)
    if refusal is not None:
        return Report(path, None, (refusal,), kind)
    return _judge_image(path, kind, "not_image", "a JPEG or PNG image")


def check_letter(path: Path, kind: str = "grant_file") -> Report:
    """A PDF with its header and end marker, or an image by the image rules."""
    refusal = refuse_as_a_file(path)
    if refusal is not None:
        return Report(path, None, (refusal,), kind)
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(5)
        handle.seek(max(0, size - _PDF_TAIL))
        tail = handle.read()
    if head != b"%PDF-":
        return _judge_image(path, kind, "not_letter", "a PDF, JPEG or PNG file")
    facts = FileFacts(size_bytes=size, format="PDF")
    if b"%%EOF" not in tail:
        return Report(path, facts, (Problem(
            "corrupt_pdf", "the PDF has no end-of-file marker: it is cut short (an "
            "interrupted copy or scan?); scan or copy it again"),), kind)
    return Report(path, facts, (), kind)


def check_audio(path: Path, kind: str = "audio") -> Report:
    """A zip whose entries are WAV or MP3 recordings, all of them intact."""
    refusal = refuse_as_a_file(path)
    if refusal is not None:
        return Report(path, None, (refusal,), kind)
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            entries = [e for e in archive.infolist() if not e.is_dir()]
            facts = FileFacts(size_bytes=size, format="ZIP", entries=len(entries))
            broken = archive.testzip()
            kinds = {e.filename: _audio_format(archive, e) for e in entries}
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
        return Report(path, FileFacts(size_bytes=size), (Problem(
            "not_zip", f"not a zip archive this tool can read ({exc})"),), kind)
    if not entries:
        return Report(path, facts, (Problem("empty_zip", "the zip holds no file"),), kind)
    problems = []
    if broken is not None:
        problems.append(Problem("corrupt_zip", f"the zip's entry {broken!r} is damaged "
                                "(its checksum does not match): zip the recordings again"))
    others = sorted(name for name, found in kinds.items() if found is None)
    if len(others) == len(kinds):
        problems.append(Problem("no_audio", "the zip holds no WAV or MP3 recording"))
    elif others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5
                                         else "")
        problems.append(Problem("not_audio", f"entries that are not WAV or MP3: {shown}"))
    return Report(path, facts, tuple(problems), kind)


def _judge_image(path: Path, kind: str, wrong_type: str, allowed: str) -> Report:
    size = path.stat().st_size
    facts = FileFacts(size_bytes=size)
    try:
        with Image.open(path) as image:
            facts = FileFacts(size_bytes=size, format=image.format, width=image.width,
                              height=image.height)
            if image.format not in ("JPEG", "PNG"):
                return Report(path, facts, (Problem(
                    wrong_type, f"the file is a {image.format} image; it must be {allowed}"),),
                    kind)
            problem = _dimensions(image.width, image.height)
            if problem is not None:
                return Report(path, facts, (problem,), kind)
            image.load()  # decode every pixel: a truncated file fails here
    except UnidentifiedImageError:
        return Report(path, facts, (Problem(
            wrong_type, f"the file is not {allowed} (whatever its name says)"),), kind)
    except Image.DecompressionBombError as exc:
        return Report(path, facts, (Problem("bad_dimensions", str(exc)),), kind)
    except (OSError, SyntaxError, ValueError) as exc:
        return Report(path, facts, (Problem(
            "corrupt_image", f"the image does not decode in full ({exc}): it is damaged or "
            "cut short; export or copy it again"),), kind)
    return Report(path, facts, (), kind)


def _dimensions(width: int, height: int) -> Problem | None:
    if MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE:
        return None
    return Problem("bad_dimensions", f"the image is {width}x{height} pixels; each side must be "
                   f"{MIN_SIDE} to {MAX_SIDE:,} pixels")


def _audio_format(archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> str | None:
    with archive.open(entry) as handle:
        head = handle.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "WAV"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    return None
