"""The voice recordings' rules (API.md §7, Huawei's voice guide), judged before any job exists.

A folder holds `0.wav, 0.txt, 1.wav, 1.txt, ...` (a zip the same files at its root); the
basic edition takes 20 sentences, the middle 100, advance and third-party one long WAV. Each
WAV must be RIFF/WAVE PCM (48 kHz mono advised: a warning otherwise); a sentence lasts about
10 s and never over 15 s; each text is present, UTF-8, not empty, in the job's language's
script. Standard library only (`wave`, `zipfile`): the same problem/warning model as the
video's, one report per sentence, one for the set, one for the letter.
"""

from __future__ import annotations

import array
import io
import math
import re
import wave
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from uploader.preflight.report import FileFacts, Problem, Report, ReviewRules

__all__ = ["Sentence", "check_recordings", "sentences_of", "size_on_disk", "total_seconds"]

#: "每句话时长不超过15秒" (a sentence never over 15 s) and about 10 s (advice: 3-15 s).
LONGEST = 15.0
ADVISED = (3.0, 15.0)
ADVISED_RATE, ADVISED_CHANNELS = 48_000, 1
#: A sentence whose loudest 0.1 s stays under this (dBFS) is silence; one with more than
#: CLIPPED of its samples at full scale is distorted (as the video's sound rules).
SILENT = -40.0
CLIPPED = 0.005
#: CN texts are mostly Chinese characters; EN texts Latin letters without any.
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
_NAME = re.compile(r"^(\d+)\.(wav|txt)$", re.IGNORECASE)


@dataclass(frozen=True)
class Sentence:
    """One sentence's files: where each is (a path, or a name in the zip)."""

    index: int
    audio: str | None
    text: str | None


def sentences_of(recordings: Path) -> dict[int, Sentence]:
    """The sentences of a folder or a zip, by index (a file missing: None)."""
    names = _names(recordings)
    found: dict[int, dict[str, str]] = {}
    for name in names:
        match = _NAME.match(Path(name).name)
        if match:
            found.setdefault(int(match[1]), {})[match[2].lower()] = name
    return {i: Sentence(i, f.get("wav"), f.get("txt")) for i, f in sorted(found.items())}


def check_recordings(recordings: Path, *, edition: str, language: str,
                     rules: ReviewRules | None = None) -> list[Report]:
    """Every rule on the recordings: a report for the set, then one per sentence."""
    rules = rules or ReviewRules()
    if not recordings.exists():
        return [Report(recordings, None, (Problem("not_found", f"no such file or folder: "
                                                  f"{recordings}"),), "recordings")]
    try:
        sentences = sentences_of(recordings)
    except (zipfile.BadZipFile, OSError) as exc:
        return [Report(recordings, None, (Problem("not_zip", f"not a zip or folder this tool "
                                                  f"can read ({exc})"),), "recordings")]
    reports = [_judge(recordings, s, language=language, long=edition not in ("basic", "middle"))
               for s in sentences.values()]
    whole = _count(recordings, sentences, edition)
    return [r.judged(rules) for r in (whole, *reports)]


def total_seconds(reports: list[Report]) -> float:
    """The recordings' length: the sum of the sentences' measured seconds."""
    return sum(r.facts.entries or 0 for r in reports
               if isinstance(r.facts, FileFacts) and r.kind.startswith("sentence")) / 1000


def _count(recordings: Path, sentences: dict[int, Sentence], edition: str) -> Report:
    want = {"basic": 20, "middle": 100}.get(edition)
    problems = []
    if want is not None and sorted(sentences) != list(range(want)):
        have = sorted(sentences)
        gaps = sorted(set(range(want)) - set(have))[:5]
        extra = [i for i in have if i >= want][:5]
        problems.append(Problem(
            "sentence_count", f"the {edition} edition takes sentences 0 to {want - 1}; "
            f"found {len(have)}" + (f", missing {gaps}" if gaps else "")
            + (f", beyond the last {extra}" if extra else ""),
            measured=f"{len(have)} sentences", rule=f"{edition}: {want} sentences "
            "(MSS.20020016: wrong number of wav/txt files)",
            todo=f"record sentences 0 to {want - 1}, each as N.wav with its N.txt"))
    if want is None and len(sentences) != 1:
        problems.append(Problem(
            "sentence_count", f"the {edition} edition takes one long recording (0.wav with "
            f"0.txt); found {len(sentences)}", rule="advance and third-party: one recording, "
            "pauses of 2-3 s between sentences", todo="join the recording into one WAV"))
    return Report(recordings, FileFacts(size_bytes=size_on_disk(recordings),
                                        format="ZIP" if recordings.is_file() else "folder",
                                        entries=len(sentences)), tuple(problems), "recordings")


def _judge(recordings: Path, sentence: Sentence, *, language: str, long: bool) -> Report:
    """One sentence: its WAV and its text."""
    label = f"sentence {sentence.index}"
    where = recordings / (sentence.audio or f"{sentence.index}.wav")
    problems: list[Problem] = []
    warnings: list[Problem] = []
    millis = 0
    if sentence.audio is None:
        problems.append(Problem("no_wav", f"{label} has no {sentence.index}.wav"))
    else:
        millis = _audio(_read(recordings, sentence.audio), label, problems, warnings, long)
    if sentence.text is None:
        problems.append(Problem("no_text", f"{label} has no {sentence.index}.txt: the text "
                                "of what is said"))
    else:
        _text(_read(recordings, sentence.text), label, language, problems)
    return Report(where, FileFacts(size_bytes=0, format="WAV", entries=millis),
                  tuple(problems), label, tuple(warnings))


def _audio(data: bytes, label: str, problems: list[Problem], warnings: list[Problem],
           long: bool) -> int:
    """The WAV's rules; its length in milliseconds."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        problems.append(Problem("not_wav", f"{label}'s audio is not a WAV file (RIFF/WAVE), "
                                "whatever its name says", rule="MSS.20020011: wrong audio format",
                                todo="export it as WAV (PCM)"))
        return 0
    try:
        with wave.open(io.BytesIO(data)) as recording:
            rate, channels = recording.getframerate(), recording.getnchannels()
            width, frames = recording.getsampwidth(), recording.getnframes()
            samples = recording.readframes(frames)
    except (wave.Error, EOFError) as exc:
        problems.append(Problem("not_wav", f"{label}'s WAV is not PCM or is damaged ({exc})",
                                rule="MSS.20020011: wrong audio format",
                                todo="export it as 16-bit PCM WAV"))
        return 0
    seconds = frames / rate if rate else 0.0
    if (rate, channels) != (ADVISED_RATE, ADVISED_CHANNELS):
        warnings.append(Problem(
            "wav_format", f"{label} is {rate} Hz, {channels} channel(s); 48 kHz mono is advised",
            measured=f"{rate} Hz x {channels}", rule="voice guide: WAV, 48 kHz mono (advice)",
            todo="record at 48 kHz, mono"))
    if not long and seconds > LONGEST:
        problems.append(Problem(
            "sentence_too_long", f"{label} lasts {seconds:.1f} s; a sentence never lasts over "
            f"{LONGEST:g} s", measured=f"{seconds:.2f} s", rule="voice guide: each sentence at "
            "most 15 s", todo="split it into two sentences"))
    elif not long and not ADVISED[0] <= seconds <= ADVISED[1]:
        warnings.append(Problem(
            "sentence_length", f"{label} lasts {seconds:.1f} s; about 10 s is advised",
            measured=f"{seconds:.2f} s", rule="voice guide: about 10 s a sentence (advice)",
            todo="record sentences of 3 to 15 s"))
    if width == 2 and samples:
        loudest, clipped = _levels(samples, channels)
        if loudest < SILENT:
            warnings.append(Problem("sentence_silent", f"{label} is silent (loudest "
                                    f"{loudest:.0f} dBFS)", measured=f"{loudest:.1f} dBFS",
                                    todo="check the microphone and record it again"))
        if clipped > CLIPPED:
            warnings.append(Problem("sentence_clipping", f"{clipped:.1%} of {label}'s samples "
                                    "are at full scale: it is distorted",
                                    todo="lower the microphone's gain and record it again"))
    return round(seconds * 1000)


def _levels(samples: bytes, channels: int) -> tuple[float, float]:
    """The loudest 0.1 s (dBFS, on a sample of each block) and the share at full scale."""
    values = array.array("h", samples[:len(samples) // 2 * 2])
    step = max(1, len(values) // 200_000)  # enough to judge, fast on long recordings
    picked = values[::step]
    block = max(1, 1600 // step)
    loudest = -120.0
    for start in range(0, len(picked), block):
        chunk = picked[start:start + block]
        rms = math.sqrt(sum(v * v for v in chunk) / len(chunk))
        loudest = max(loudest, 20 * math.log10(max(rms, 1.0) / 32768))
    clipped = sum(1 for v in picked if abs(v) >= 32112) / max(len(picked), 1)
    return loudest, clipped


def _text(data: bytes, label: str, language: str, problems: list[Problem]) -> None:
    try:
        text = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        problems.append(Problem("text_not_utf8", f"{label}'s text is not UTF-8",
                                todo="save the text as UTF-8"))
        return
    if not text:
        problems.append(Problem("empty_text", f"{label}'s text is empty",
                                todo="write exactly what is said"))
        return
    cjk, latin = len(_CJK.findall(text)), len(_LATIN.findall(text))
    wrong = (cjk < latin) if language == "CN" else bool(cjk) or not latin
    if wrong:
        script = "Chinese" if language == "CN" else "English (Latin letters)"
        problems.append(Problem(
            "wrong_language", f"{label}'s text is not in {script}: {text[:30]!r}",
            measured=f"{cjk} Chinese characters, {latin} Latin letters",
            rule="the text is not in the chosen language (the review refuses it)",
            todo=f"write the text in the job's language ({language}), or change the job's "
                 "language"))


def _names(recordings: Path) -> Iterator[str]:
    if recordings.is_dir():
        yield from (p.name for p in sorted(recordings.iterdir()) if p.is_file())
        return
    with zipfile.ZipFile(recordings) as archive:
        yield from (n for n in archive.namelist() if not n.endswith("/"))


def _read(recordings: Path, name: str) -> bytes:
    if recordings.is_dir():
        return (recordings / name).read_bytes()
    with zipfile.ZipFile(recordings) as archive:
        return archive.read(name)


def size_on_disk(path: Path) -> int:
    """The bytes of a file, or of the files directly in a folder (a folder of recordings)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
