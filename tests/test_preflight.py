"""Preflight: every problem code, the boundaries, odd files, and `uploader check` as run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from samples.make_samples import grow
from tests.conftest import SAMPLES
from uploader.preflight import check_video, check_video_async


def codes(path: Path | str) -> list[str]:
    return [problem.code for problem in check_video(path).problems]


@pytest.mark.parametrize(("sample", "width", "height", "orientation", "codec"), [
    ("landscape_1080p.mp4", 1920, 1080, "landscape", "AVC"),
    ("portrait_1080p.mp4", 1080, 1920, "portrait", "AVC"),
    ("landscape_4k.mp4", 3840, 2160, "landscape", "AVC"),
    ("portrait_4k_hevc.mp4", 2160, 3840, "portrait", "HEVC"),
    ("rotated_1080p.mp4", 1080, 1920, "portrait", "AVC"),
    ("moov_at_end.mp4", 1920, 1080, "landscape", "AVC"),
])
def test_accepted_videos_and_their_facts(sample, width, height, orientation, codec):
    report = check_video(SAMPLES / sample)
    assert report.ok, report.problems
    facts = report.facts
    assert facts is not None
    assert (facts.width, facts.height, facts.orientation, facts.video_codec) == (
        width, height, orientation, codec)
    assert facts.container == "MPEG-4" and facts.duration_seconds == 200.0
    assert facts.size_bytes == (SAMPLES / sample).stat().st_size


def test_rotation_is_reported():
    facts = check_video(SAMPLES / "rotated_1080p.mp4").facts
    assert facts is not None and facts.rotation in (90, 270)


@pytest.mark.parametrize(("sample", "seconds", "expected"), [
    ("boundary_180s.mp4", 180.0, []),
    ("boundary_600s.mp4", 600.0, []),
    ("too_short.mp4", 179.5, ["too_short"]),
    ("too_long.mp4", 600.5, ["too_long"]),
])
def test_duration_boundaries(sample, seconds, expected):
    report = check_video(SAMPLES / sample)
    assert report.facts is not None and report.facts.duration_seconds == seconds
    assert codes(SAMPLES / sample) == expected


def test_messages_say_what_was_found_and_what_is_allowed():
    short = check_video(SAMPLES / "too_short.mp4").problems[0].message
    assert "179.500 s" in short and "3 minutes" in short
    resolution = check_video(SAMPLES / "wrong_resolution.mp4").problems[0].message
    assert "1280x720" in resolution and "1920x1080, 1080x1920, 3840x2160" in resolution


@pytest.mark.parametrize(("sample", "code"), [
    ("wrong_resolution.mp4", "bad_resolution"),
    ("matroska_named.mp4", "not_mp4"),
    ("audio_only.mp4", "no_video_track"),
])
def test_refused_samples(sample, code):
    assert codes(SAMPLES / sample) == [code]


def test_all_problems_are_reported_together():
    assert codes(SAMPLES / "three_problems.mp4") == ["not_mp4", "bad_resolution", "too_short"]


def test_missing_path():
    assert codes("/nonexistent/video.mp4") == ["not_found"]


def test_directory(tmp_path: Path):
    assert codes(tmp_path) == ["not_a_file"]


def test_empty_file(tmp_path: Path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    assert codes(empty) == ["empty"]


def test_text_file_named_mp4(tmp_path: Path):
    text = tmp_path / "notes.mp4"
    text.write_text("these are not frames\n" * 50)
    assert codes(text) == ["unparseable"]


@pytest.mark.parametrize("sample", ["moov_at_end.mp4", "landscape_1080p.mp4"])
def test_truncated_file(tmp_path: Path, sample):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes((SAMPLES / sample).read_bytes()[:10_000])
    report = check_video(cut)
    assert [p.code for p in report.problems] == ["unparseable"]
    assert "truncated" in report.problems[0].message


def test_grown_file_still_passes(tmp_path: Path):
    big = tmp_path / "big.mp4"
    grow(SAMPLES / "moov_at_end.mp4", big, 3_000_000)
    report = check_video(big)
    assert report.ok and report.facts is not None and report.facts.size_bytes == 3_000_000


def _unreadable_file(tmp_path: Path) -> Path:
    """A regular file this process cannot read."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked.mp4"
        shutil.copyfile(SAMPLES / "landscape_1080p.mp4", locked)
        locked.chmod(0)
        return locked
    # Root reads any file of a normal file system; the kernel still refuses to open a
    # write-only sysfs attribute (mode 0200) for reading, to root too.
    for candidate in sorted(Path("/sys").glob("devices/*/*/rescan")):
        if candidate.stat().st_mode & 0o444 == 0:
            return candidate
    pytest.skip("no file here that root cannot read")


def test_unreadable_file(tmp_path: Path):
    report = check_video(_unreadable_file(tmp_path))
    assert [p.code for p in report.problems] == ["unreadable"]
    assert "Permission denied" in report.problems[0].message


async def test_async_check_matches_sync():
    report = await check_video_async(SAMPLES / "portrait_1080p.mp4")
    assert report == check_video(SAMPLES / "portrait_1080p.mp4")


def _run_check(*paths: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "uploader", "check", *paths],
                          capture_output=True, text=True, timeout=60)


def _readme_verdicts() -> dict[str, str]:
    rows = re.findall(r"^\| `([\w.]+\.mp4)` \| .* \| (.+) \|$",
                      (SAMPLES / "README.md").read_text(), re.M)
    return {name: verdict for name, verdict in rows}


def test_check_json_gives_the_verdicts_the_samples_readme_promises():
    promised = _readme_verdicts()
    assert len(promised) == len(list(SAMPLES.glob("*.mp4")))
    result = _run_check("--json", *sorted(str(p) for p in SAMPLES.glob("*.mp4")))
    assert result.returncode == 3
    for entry in json.loads(result.stdout):
        verdict = promised[Path(entry["path"]).name]
        expected = [] if verdict.startswith("passes") else re.findall(r"`(\w+)`", verdict)
        assert [p["code"] for p in entry["problems"]] == expected, entry["path"]
        assert entry["ok"] == (expected == [])
        assert set(entry) == {"path", "kind", "ok", "problems", "warnings", "facts"}
        if entry["facts"] and entry["facts"].get("frame_rate"):  # 1 or 2 fps, each of them
            assert "low_frame_rate" in [w["code"] for w in entry["warnings"]], entry["path"]


@pytest.mark.slow
def test_check_exit_codes_and_mixed_verdicts(tmp_path: Path):
    good = _run_check(str(SAMPLES / "landscape_1080p.mp4"), str(SAMPLES / "landscape_4k.mp4"))
    assert good.returncode == 0 and good.stdout.count("passes") == 2
    empty = tmp_path / "empty.mp4"
    empty.touch()
    mixed = _run_check(str(SAMPLES / "landscape_1080p.mp4"), str(empty), str(tmp_path),
                       "/nonexistent.mp4", str(SAMPLES / "too_long.mp4"))
    assert mixed.returncode == 3
    for code in ("empty", "not_a_file", "not_found", "too_long"):
        assert f"- {code}:" in mixed.stdout
    assert "Traceback" not in mixed.stdout + mixed.stderr


def test_check_survives_any_garbage(tmp_path: Path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(50_000))
    result = _run_check("--json", str(garbage))
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert json.loads(result.stdout)[0]["ok"] is False


def test_check_json_facts_and_problems_agree_on_a_quicktime_movie(tmp_path: Path):
    data = bytearray((SAMPLES / "landscape_1080p.mp4").read_bytes())
    assert data[4:12] == b"ftypisom"
    data[8:12] = b"qt  "  # the major brand of a QuickTime movie
    movie = tmp_path / "take.mov"
    movie.write_bytes(bytes(data))
    run = subprocess.run([sys.executable, "-m", "uploader", "check", str(movie), "--json"],
                         capture_output=True, text=True, timeout=60)
    [report] = json.loads(run.stdout)
    assert report["facts"]["container"] == "QuickTime"
    assert [p["code"] for p in report["problems"]] == ["not_mp4"]
    assert "the container is QuickTime" in report["problems"][0]["message"]


# ---- the review, predicted from the headers (issue 29, items 1-3) ----------------------


def test_a_video_without_sound_is_refused_unless_the_job_trains_the_figure_only(tmp_path):
    from uploader.preflight import ReviewRules, check_video

    silent = SAMPLES / "no_audio.mp4"
    assert [p.code for p in check_video(silent).problems] == ["no_audio"]
    assert check_video(silent, ReviewRules(human_only=True, edition="flexus")).ok
    ignored = check_video(silent, ReviewRules(ignore=frozenset({"no_audio"})))
    assert ignored.ok and "no_audio" in [w.code for w in ignored.warnings]
    assert "ignored as asked" in next(w.message for w in ignored.warnings
                                      if w.code == "no_audio")
    assert check_video(SAMPLES / "landscape_1080p.mp4").ok  # its silent track is a track


class _Track:
    def __init__(self, track_type: str, **values: object) -> None:
        self.track_type = track_type
        self.__dict__.update(values)


class _Info:
    """What pymediainfo's reading of a file offers the rules: its tracks."""

    def __init__(self, *tracks: _Track) -> None:
        self.tracks = list(tracks)


@pytest.mark.parametrize(("fps", "mode", "picture", "sound", "edition", "seconds", "warned"), [
    (25.0, "CFR", 200_000, 200_000, "standard", 200.0, []),
    (24.99, "CFR", 200_000, 200_000, "standard", 200.0, ["low_frame_rate"]),
    (25.0, "VFR", 200_000, 200_000, "standard", 200.0, ["variable_frame_rate"]),
    (25.0, "CFR", 200_000, 200_500, "standard", 200.0, []),
    (25.0, "CFR", 200_000, 200_501, "standard", 200.0, ["av_length_differs"]),
    (25.0, "CFR", 300_000, 300_000, "flexus", 300.0, []),
    (25.0, "CFR", 300_100, 300_100, "fast-flexus", 300.1, ["flexus_duration"]),
    (25.0, "CFR", 400_000, 400_000, "standard", 400.0, []),
])
def test_the_guides_advice_from_the_headers_on_both_sides_of_each_line(
        fps, mode, picture, sound, edition, seconds, warned):
    from uploader.preflight import Facts, ReviewRules
    from uploader.preflight.video import _sound_and_advice

    info = _Info(_Track("Video", duration=picture, frame_rate_mode=mode),
                 _Track("Audio", duration=sound))
    facts = Facts(size_bytes=1, container="MPEG-4", frame_rate=fps, duration_seconds=seconds)
    problems, warnings = _sound_and_advice(facts, info, ReviewRules(edition=edition))
    assert problems == [] and [w.code for w in warnings] == warned
    assert all(w.measured and w.rule and w.todo for w in warnings)


def test_upload_refuses_a_silent_video_and_takes_it_with_ignore(emulator_thread, tmp_path):
    from tests.uploads import cli_env, json_out, run_cli

    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    video = tmp_path / "silent.mp4"
    video.write_bytes((SAMPLES / "no_audio.mp4").read_bytes())
    refused = run_cli("upload", str(video), "--name", "silent", env=env)
    assert refused.returncode == 3 and "no_audio" in refused.stderr
    assert not emulator_thread.emulator.store.jobs  # nothing irreversible was done
    taken = json_out(run_cli("upload", str(video), "--name", "silent", "--ignore", "no_audio",
                             "--json", env=env))
    codes = [w["code"] for w in taken["files"][0]["warnings"]]  # type: ignore[index]
    assert "no_audio" in codes and "low_frame_rate" in codes
    manifest = tmp_path / "rows.csv"
    manifest.write_text(f"path,name,ignore\n{video},row,no_audio;low_frame_rate\n")
    batch = run_cli("batch", str(manifest), "--report", str(tmp_path / "r.jsonl"), env=env)
    assert batch.returncode == 0, batch.stderr
    row = json.loads((tmp_path / "r.jsonl").read_text())
    assert "training_video: no_audio" in row["warnings"]
