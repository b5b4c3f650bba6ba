"""The whole job against the emulator: every file to its own link, byte-identical, then the
confirms and SUBMITVERIFYING (API.md §4b); refusals before any link is spent; resumes."""

from __future__ import annotations

import asyncio
import io
import time
import urllib.error
import urllib.request
import wave
import zipfile
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, emulator_config
from tests.uploads import (
    FAST,
    REQUIRED,
    REQUIRED_FLAGS,
    cli_env,
    json_out,
    new_job,
    run_cli,
    start_cli,
    video_of,
)
from uploader import (
    Limits,
    MetaStudioClient,
    MissingFilesError,
    Settings,
    submit_job,
    upload_video,
)
from uploader.emulator import RunningEmulator, start_emulator

#: show job's download field of each upload_video keyword (API.md §4b).
DOWNLOADS = {"training_video": "training_video_download_url",
             "action_video": "action_video_download_url",
             "id_card_front": "id_card_image1_download_url",
             "id_card_back": "id_card_image2_download_url",
             "grant_file": "grant_file_download_url", "cover": "cover_download_url",
             "audio": "audio_file_download_url"}


def recordings(path: Path, *names: str) -> Path:
    """A zip of short WAV recordings named `names`."""
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            sound = io.BytesIO()
            with wave.open(sound, "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(8000)
                out.writeframes(b"\0\0" * 8000)
            archive.writestr(name, sound.getvalue())
    return path


def all_files(tmp_path: Path) -> dict[str, Path]:
    """Every optional file besides the required ones, as `upload_video` keywords."""
    return REQUIRED | {"cover": SAMPLES / "id_card_back.jpg",
                       "action_video": video_of(tmp_path, 400_000, "action.mp4"),
                       "audio": recordings(tmp_path / "voice.zip", "a.wav", "b.wav")}


async def stored_files(settings: Settings, job_id: str) -> dict[str, bytes | None]:
    """What the job holds of each kind of file, downloaded (None: not stored)."""
    async with MetaStudioClient(settings) as client:
        detail = (await client.show_job(job_id)).raw
    return {kind: (await asyncio.to_thread(_download, detail[field])
                   if detail.get(field) else None) for kind, field in DOWNLOADS.items()}


def _download(url: str) -> bytes | None:
    """The file behind a download link; None if it is gone (the review deletes the ID cards
    once it has checked them, and with no review delay that may be before this asks)."""
    try:
        with urllib.request.urlopen(url) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _flags(files: dict[str, Path]) -> list[str]:
    return [arg for name, path in files.items()
            for arg in ("--" + name.replace("_", "-"), str(path))]


# ---- the whole job, as a person runs it ---------------------------------------------------


def test_cli_whole_job_with_every_file(emulator_thread: RunningEmulator, tmp_path: Path):
    video = video_of(tmp_path, 900_000)
    files = all_files(tmp_path)
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    result = json_out(run_cli("upload", str(video), "--name", "whole", *_flags(files),
                              "--submit", "--wait", "--json", env=env))
    assert result["state"] == "MANUAL_VERIFYING" and result["submitted"] is True
    sent = {f["kind"]: f["outcome"] for f in result["files"]}  # type: ignore[union-attr]
    assert sent == dict.fromkeys(["training_video", *files], "sent")
    stored = asyncio.run(stored_files(Settings.from_env(emulator_thread.client_env()),
                                      str(result["job_id"])))
    assert stored["training_video"] == video.read_bytes()
    for kind, path in files.items():
        if kind.startswith("id_card"):
            assert stored[kind] is None  # deleted after the identity check, as documented
        else:
            assert stored[kind] == path.read_bytes(), kind
    log_types = [e["log_type"] for e in emulator_thread.emulator.store.jobs[
        str(result["job_id"])]["operation_logs"]]
    assert log_types == ["USER_CREATE_JOD", "USER_VERIFYING_SUBMITTED", "SYSTEM_VERIFY_SUCCESS"]
    assert list((tmp_path / "state").rglob("*.jsonl")) == []


def test_upload_without_submit_leaves_the_job_waiting(emulator_thread, tmp_path: Path):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    result = run_cli("upload", str(SAMPLES / "landscape_1080p.mp4"), "--name", "later",
                     *REQUIRED_FLAGS, "--wait", env=env, timeout=20)
    assert result.returncode == 0, result.stderr
    assert "state: WAIT_FILE_UPLOAD" in result.stdout
    job_id = next(iter(emulator_thread.emulator.store.jobs))
    assert f"uploader submit {job_id}" in result.stdout
    submitted = json_out(run_cli("submit", job_id, "--wait", "--json", env=env))
    assert submitted["state"] == "MANUAL_VERIFYING"


def test_submit_without_a_required_file_is_refused_before_anything(emulator_thread, tmp_path):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    result = run_cli("upload", str(SAMPLES / "landscape_1080p.mp4"), "--name", "short",
                     "--id-card-front", str(REQUIRED["id_card_front"]), "--submit", env=env)
    assert result.returncode == 2, result.stderr
    assert "--id-card-back" in result.stderr and "--grant-file" in result.stderr
    assert "--id-card-front" not in result.stderr.split("To submit")[1]
    assert emulator_thread.emulator.store.jobs == {}  # no job, no link spent


def test_submit_command_refuses_a_job_missing_files(emulator_thread, tmp_path):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    job_id = new_job(emulator_thread)
    result = run_cli("submit", job_id, env=env)
    assert result.returncode == 2 and "--grant-file" in result.stderr, result.stderr
    assert emulator_thread.emulator.store.jobs[job_id]["state"] == "WAIT_FILE_UPLOAD"


# ---- bad files: exit 3, a code each, nothing sent ----------------------------------------


@pytest.mark.parametrize(("flag", "make", "code"), [
    ("--id-card-front", lambda d: d / "missing.jpg", "not_found"),
    ("--id-card-back", lambda d: _write(d / "text.jpg", b"just some text"), "not_image"),
    ("--id-card-front", lambda d: _write(d / "cut.jpg",
                                         REQUIRED["id_card_front"].read_bytes()[:3000]),
     "corrupt_image"),
    ("--cover", lambda d: _write(d / "empty.png", b""), "empty"),
    ("--cover", lambda d: _gif(d / "cover.png"), "not_image"),
    ("--cover", lambda d: _tiny(d / "tiny.png"), "bad_dimensions"),
    ("--grant-file", lambda d: _write(d / "letter.pdf", b"%PDF-1.4\n1 0 obj"), "corrupt_pdf"),
    ("--grant-file", lambda d: _write(d / "letter.docx", b"PK\3\4 a word file"), "not_letter"),
    ("--audio", lambda d: recordings(d / "empty.zip"), "empty_zip"),
    ("--audio", lambda d: _zip_of(d / "notes.zip", {"notes.txt": b"hello"}), "no_audio"),
    ("--audio", lambda d: _write(d / "voice.zip", b"not a zip"), "not_zip"),
    ("--action-video", lambda d: SAMPLES / "too_short.mp4", "too_short"),
])
def test_a_bad_file_exits_3_and_sends_nothing(emulator_thread, tmp_path, flag, make, code):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    result = run_cli("upload", str(SAMPLES / "landscape_1080p.mp4"), "--name", "bad",
                     flag, str(make(tmp_path)), env=env)
    assert result.returncode == 3, result.stderr
    assert f"- {code}:" in result.stderr and "Traceback" not in result.stderr
    assert emulator_thread.emulator.store.jobs == {}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _zip_of(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def _gif(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (200, 200)).save(path, format="GIF")
    return path


def _tiny(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (40, 30)).save(path)
    return path


# ---- links spent or expired, a failed review, a killed run -----------------------------


async def test_single_file_answers_lost(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Half the answers to stored files are dropped (their links are spent): each such file
    is settled by its ETag on the server (a ranged GET of its download link, whose one byte
    is read: the storage is not left writing to a closed connection)."""
    running = await start_emulator(emulator_config(tmp_path / "emulator", drop_rate=0.5))
    try:
        settings = Settings.from_env(running.client_env())
        files = all_files(tmp_path)
        video = video_of(tmp_path, 600_000)
        result = await upload_video(video, name="faulty", settings=settings,
                                    state_dir=tmp_path / "state", transfer=FAST, submit=True,
                                    wait=True, **files)
        assert result.state == "MANUAL_VERIFYING"
        totals = running.emulator.faults.totals()
        assert totals["dropped"] > 0
        stored = await stored_files(settings, result.job_id)
        assert stored["training_video"] == video.read_bytes()
        for kind in ("grant_file", "cover", "action_video", "audio"):
            assert stored[kind] == files[kind].read_bytes(), kind
        assert "Error handling request" not in caplog.text
    finally:
        await running.stop()


@pytest.mark.slow
async def test_expired_links_are_refreshed(tmp_path: Path):
    running = await start_emulator(emulator_config(tmp_path / "emulator", url_ttl=1,
                                                   link_rate=300 * 1024))
    try:
        settings = Settings.from_env(running.client_env())

        async def lengthen_links() -> None:
            while not running.emulator.store.jobs:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            running.emulator.storage.url_ttl = 3600  # only the first links expire

        result, _ = await asyncio.gather(upload_video(
            video_of(tmp_path, 900_000), name="slow", settings=settings, parts=3,
            state_dir=tmp_path / "state", transfer=FAST, limits=Limits(concurrency=1),
            **REQUIRED),
            lengthen_links())
        assert running.emulator.faults.totals()["refused"] > 0
        stored = await stored_files(settings, result.job_id)
        assert stored["grant_file"] == REQUIRED["grant_file"].read_bytes()
    finally:
        await running.stop()


async def test_resubmission_after_a_failed_review(emulator, settings, tmp_path: Path):
    """A job refused for a missing letter: update, the ID images again, the letter, submit."""
    async with MetaStudioClient(settings) as client:
        job = await client.create_job("refused")
        for link, body in ((job.training_video_upload_url[0],
                            (SAMPLES / "landscape_1080p.mp4").read_bytes()),
                           (job.raw["id_card_image1_upload_url"], b"front"),
                           (job.raw["id_card_image2_upload_url"], b"back")):
            await asyncio.to_thread(_put, link, body)
        for command in ("CONFIRM_MULTIPART_UPLOADED", "SUBMITVERIFYING"):
            assert (await client.command(job.job_id, command)).succeeded
        for _ in range(100):
            if (await client.show_job(job.job_id)).state == "AUTO_VERIFY_FAILED":
                break
            await asyncio.sleep(0.05)
    with pytest.raises(MissingFilesError) as refused:  # the ID images were deleted
        await upload_video(SAMPLES / "landscape_1080p.mp4", job_id=job.job_id, submit=True,
                           settings=settings, state_dir=tmp_path / "state",
                           grant_file=REQUIRED["grant_file"])
    assert refused.value.kinds == ("id_card_front", "id_card_back")
    result = await upload_video(SAMPLES / "portrait_1080p.mp4", job_id=job.job_id,
                                submit=True, wait=True, settings=settings,
                                state_dir=tmp_path / "state", **REQUIRED)
    assert result.state == "MANUAL_VERIFYING" and result.review_error_code is None
    stored = await stored_files(settings, job.job_id)
    assert stored["training_video"] == (SAMPLES / "portrait_1080p.mp4").read_bytes()


def _put(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(request).close()


@pytest.mark.slow
def test_kill_9_in_the_action_video_then_resume(emulator_thread, tmp_path: Path):
    video = video_of(tmp_path, 500_000)
    action = video_of(tmp_path, 3_000_000, "action.mp4")
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    faults = emulator_thread.emulator.faults
    faults.link_rate = 400 * 1024  # the action video takes seconds
    args = ["upload", str(video), "--name", "killed", *REQUIRED_FLAGS, "--action-video",
            str(action), "--submit", "--json", "--concurrency", "2"]
    first = start_cli(*args, env=env)
    store = emulator_thread.emulator.store
    for _ in range(600):
        job_id = next(iter(store.jobs), None)
        if job_id and len(store.files(job_id)) + len(_parts(emulator_thread, job_id)) >= 3:
            break
        time.sleep(0.02)
    first.kill()
    first.communicate()
    faults.link_rate = None
    result = json_out(run_cli(*args, env=env))
    assert result["job_id"] == job_id and result["submitted"] is True
    assert len(store.jobs) == 1
    stored = asyncio.run(stored_files(Settings.from_env(emulator_thread.client_env()),
                                      str(job_id)))
    assert stored["training_video"] == video.read_bytes()
    assert stored["action_video"] == action.read_bytes()
    assert stored["grant_file"] == REQUIRED["grant_file"].read_bytes()
    skipped = [f["kind"] for f in result["files"] if f["outcome"] == "skipped"]  # type: ignore
    assert skipped, "the resume sent everything again"


def _parts(emulator: RunningEmulator, job_id: str) -> list[int]:
    uploads = emulator.emulator.store.jobs[job_id]["uploads"]
    return [n for upload in uploads.values()
            for n in emulator.emulator.store.parts(upload["upload_id"])]


async def test_submit_job_from_code(emulator, settings, tmp_path: Path):
    result = await upload_video(SAMPLES / "landscape_1080p.mp4", name="code",
                                settings=settings, state_dir=tmp_path, **REQUIRED)
    assert result.state == "WAIT_FILE_UPLOAD" and not result.submitted
    submitted = await submit_job(result.job_id, wait=True, settings=settings)
    assert submitted.submitted and submitted.state == "MANUAL_VERIFYING"


def test_submit_names_the_command_that_gives_missing_files(emulator_thread, tmp_path):
    from tests.uploads import cli_env, new_job, run_cli

    job_id = new_job(emulator_thread, "bare")
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    result = run_cli("submit", job_id, env=env)
    assert result.returncode == 2
    assert f"uploader upload VIDEO --job-id {job_id} --id-card-front FILE" in result.stderr
