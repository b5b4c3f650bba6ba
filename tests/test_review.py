"""The review, predicted: the content rules on pictures and sounds made at test time.

Each rule is tested on both sides of its line: on frames (the face detector and the colour
measures on real pixels, a real face from scikit-image), then on whole videos through
`uploader check`, then gating `uploader upload` before the confirm, with the job kept for a
re-run that sends nothing again.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests import media
from tests.conftest import SAMPLES
from tests.uploads import cli_env, run_cli, stored_parts
from uploader.emulator import RunningEmulator
from uploader.preflight import content
from uploader.preflight.frames import Frame, read_sound
from uploader.preflight.report import ReviewRules

pytestmark = pytest.mark.content_checks

W, H = 1920, 1080
RULES = ReviewRules()


def frames_of(picture: media.Image, count: int = 3) -> list[Frame]:
    """`picture` as the sampled frames of a still video: BGR, scaled as frames.py does."""
    height, width = picture.shape[:2]
    scale = 640 / max(width, height)
    small = cv2.resize(picture[..., ::-1], (round(width * scale), round(height * scale)),
                       interpolation=cv2.INTER_AREA)
    return [Frame(float(i), small) for i in range(count)]


def codes(picture: media.Image, rules: ReviewRules = RULES) -> tuple[set[str], set[str]]:
    found = content.judge_frames(frames_of(picture), rules)
    return {p.code for p in found.problems}, {w.code for w in found.warnings}


def test_a_face_on_a_green_screen_passes_every_picture_rule():
    assert codes(media.scene(W, H)) == (set(), set())
    assert codes(media.scene(H, W, faces=((0.5, 0.4, 0.45),))) == (set(), set())  # portrait


@pytest.mark.parametrize(("covered", "refused"), [(0.05, False), (0.3, True)])
def test_green_screen_on_both_sides_of_its_share(covered, refused):
    picture = media.scene(W, H)
    picture[:, int(W * (1 - covered)):] = media.ROOM  # a wall reaching into the border
    problems, _ = codes(picture)
    assert ("no_green_screen" in problems) is refused


def test_a_real_scene_is_refused_only_when_the_background_is_replaced():
    room = media.scene(W, H, background=media.real_room(W, H))
    problems, _ = codes(room)
    assert problems == {"no_green_screen"}
    message = content.judge_frames(frames_of(room), RULES).problems[0]
    assert "background replacement off" in (message.todo or "")
    assert codes(room, ReviewRules(background_replacement=False)) == (set(), set())


def test_no_face_and_a_sideways_picture_are_problems():
    assert codes(media.scene(W, H, faces=()))[0] == {"no_face"}
    upright = media.scene(H, W, faces=((0.5, 0.4, 0.45),))  # a portrait recording
    for turns, way in ((1, "clockwise"), (-1, "counter-clockwise")):
        stored = np.ascontiguousarray(np.rot90(upright, turns))  # stored sideways, no tag
        found = content.judge_frames(frames_of(stored), RULES)
        assert [p.code for p in found.problems] == ["sideways"]
        assert f"90° {way}" in found.problems[0].message


@pytest.mark.parametrize(("faces", "warned"), [
    (((0.5, 0.5, 0.8),), False),
    (((0.3, 0.5, 0.7), (0.7, 0.5, 0.7)), True),
])
def test_several_faces(faces, warned):
    assert ("several_faces" in codes(media.scene(W, H, faces=faces))[1]) is warned


@pytest.mark.parametrize(("height", "warned"), [(0.8, False), (0.6, True)])
def test_face_small_on_both_sides_of_a_fifth(height, warned):
    # The detector's box is about half the pasted face's height: 0.8 of 1080 is 23 % of
    # the width, 0.6 is 17 %.
    assert ("face_small" in codes(media.scene(W, H, faces=((0.5, 0.5, height),)))[1]) is warned


@pytest.mark.parametrize(("x", "warned"), [(0.62, False), (0.75, True)])
def test_face_off_centre(x, warned):
    picture = media.scene(W, H, faces=((x, 0.5, 0.8),))
    assert ("face_off_centre" in codes(picture)[1]) is warned


@pytest.mark.parametrize(("brightness", "warning"), [
    (0.3, "too_dark"), (0.5, None), (1.0, None), (1.5, None), (3.0, "overexposed")])
def test_exposure_on_both_sides(brightness, warning):
    _, warnings = codes(media.scene(W, H, brightness=brightness))
    assert warnings & {"too_dark", "overexposed"} == ({warning} if warning else set())


@pytest.mark.parametrize(("blur", "warned"), [(0, False), (2, False), (4, True), (8, True)])
def test_blurry_face(blur, warned):
    assert ("blurry" in codes(media.scene(W, H, blur=blur))[1]) is warned


def _sound_codes(tmp_path: Path, sound: list[tuple[float, str]]) -> set[str]:
    video = media.write_video(tmp_path / "sound.mp4", media.scene(64, 64, faces=()),
                              sum(s for s, _ in sound), sound=sound)
    measured = read_sound(video)
    assert measured is not None
    return {w.code for w in content.judge_sound(measured).warnings}


@pytest.mark.parametrize(("opening", "warned"), [(16, False), (12, True)])
def test_silent_opening_on_both_sides_of_15_s(tmp_path, opening, warned):
    found = _sound_codes(tmp_path, [(opening, "silence"), (8, "speech"), (4, "silence")])
    assert ("no_silent_opening" in found) is warned
    assert "no_silent_ending" not in found


@pytest.mark.parametrize(("ending", "warned"), [(4, False), (1.5, True)])
def test_silent_ending_on_both_sides_of_3_s(tmp_path, ending, warned):
    found = _sound_codes(tmp_path, [(16, "silence"), (8, "speech"), (ending, "silence")])
    assert ("no_silent_ending" in found) is warned


def test_a_silent_track_and_a_clipped_one(tmp_path):
    assert "audio_silent" in _sound_codes(tmp_path, [(30, "silence")])
    clipped = _sound_codes(tmp_path, [(16, "silence"), (4, "clipped"), (4, "silence")])
    assert "audio_clipping" in clipped and "audio_silent" not in clipped
    clean = _sound_codes(tmp_path, [(16, "silence"), (4, "speech"), (4, "silence")])
    assert not clean & {"audio_clipping", "audio_silent"}


def test_the_id_card_needs_a_face_and_no_glare(tmp_path):
    card = np.full((400, 640, 3), (232, 238, 246), np.uint8)
    plain = content.analyse_id_card(media.write_image(tmp_path / "plain.jpg", card))
    assert [w.code for w in plain.warnings] == ["id_no_face"]
    card[90:290, 430:610] = media.face(200)[:, :180]
    good = content.analyse_id_card(media.write_image(tmp_path / "good.jpg", card))
    assert good.warnings == ()
    card[:150, :300] = 255  # a reflection over a tenth of the card
    glare = content.analyse_id_card(media.write_image(tmp_path / "glare.jpg", card))
    assert [w.code for w in glare.warnings] == ["id_glare"]


# Whole videos, as `uploader check` judges them: short ones (the header rules then also say
# too_short; the content rules judge what the file shows all the same).

CASES = {
    "green_face": (media.scene, {}, set(), set()),
    "real_scene": (media.scene, {"background": "room"}, {"no_green_screen"}, set()),
    "no_face": (media.scene, {"faces": ()}, {"no_face"}, set()),
    "dark": (media.scene, {"brightness": 0.3}, set(), {"too_dark"}),
    "two_faces": (media.scene, {"faces": ((0.3, 0.5, 0.7), (0.7, 0.5, 0.7))}, set(),
                  {"several_faces", "face_small"}),
    "small_face": (media.scene, {"faces": ((0.5, 0.5, 0.5),)}, set(), {"face_small"}),
}


def _picture_of(case: str, width: int = W, height: int = H) -> media.Image:
    _, given, _, _ = CASES[case]
    if given.get("background") == "room":
        given = {**given, "background": media.real_room(width, height)}
    return media.scene(width, height, **given)


GOOD_SOUND = [(16.0, "silence"), (6.0, "speech"), (4.0, "silence")]


def check_json(*args: str) -> list[dict[str, object]]:
    """`uploader check --json ARGS` as a user runs it (in this process: the content rules'
    imports are paid once)."""
    ran = run_cli("check", "--json", *args, env=dict(os.environ))
    assert ran.returncode in (0, 3), ran.stderr
    return list(json.loads(ran.stdout))


@pytest.mark.slow
def test_check_judges_each_case(tmp_path):
    # Half of 1080p: the rules judge frames scaled to 640 pixels anyway, and a smaller
    # video is quicker to make. The header rules say too_short and bad_resolution too.
    w, h = W // 2, H // 2
    videos = [media.write_video(tmp_path / f"{case}.mp4", _picture_of(case, w, h), 26,
                                sound=GOOD_SOUND) for case in CASES]
    sideways = np.ascontiguousarray(np.rot90(media.scene(h, w, faces=((0.5, 0.4, 0.45),))))
    videos.append(media.write_video(tmp_path / "sideways.mp4", sideways, 26, sound=GOOD_SOUND))
    loud = media.write_video(tmp_path / "loud_opening.mp4", media.scene(w, h), 26,
                             sound=[(2.0, "silence"), (20.0, "speech"), (4.0, "silence")])
    silent = media.write_video(tmp_path / "no_track.mp4", media.scene(w, h), 26, sound=None)
    reports = check_json(*map(str, [*videos, loud, silent]))
    by_name = {Path(str(r["path"])).stem: r for r in reports}
    header = {"too_short", "low_frame_rate", "bad_resolution"}
    for case, (_, _, problems, warnings) in CASES.items():
        found = by_name[case]
        assert {p["code"] for p in found["problems"]} - header == problems, case  # type: ignore[union-attr,index]
        assert {w["code"] for w in found["warnings"]} - header == warnings, case  # type: ignore[union-attr,index]
    assert {p["code"] for p in by_name["sideways"]["problems"]} - header == {"sideways"}  # type: ignore[union-attr,index]
    assert "no_silent_opening" in {w["code"] for w in by_name["loud_opening"]["warnings"]}  # type: ignore[union-attr,index]
    assert "no_audio" in {p["code"] for p in by_name["no_track"]["problems"]}  # type: ignore[union-attr,index]
    finding = next(p for p in by_name["no_face"]["problems"] if p["code"] == "no_face")  # type: ignore[union-attr,index]
    assert {"measured", "rule", "todo"} <= set(finding)


@pytest.mark.slow
def test_the_samples_pass_every_rule_and_no_content_checks_skips_them(tmp_path):
    """The README's first command must end in MANUAL_VERIFYING: its sample passes."""
    names = ["landscape_1080p.mp4", "portrait_1080p.mp4", "rotated_1080p.mp4"]
    reports = check_json(*(str(SAMPLES / n) for n in names),
                         "--id-card-front", str(SAMPLES / "id_card_front.jpg"))
    for report in reports:
        assert report["ok"], report
        assert {w["code"] for w in report["warnings"]} <= {"low_frame_rate"}, report  # type: ignore[union-attr,index]
    room = media.write_video(tmp_path / "room.mp4", _picture_of("real_scene", W // 2, H // 2),
                             26, sound=GOOD_SOUND)
    headers_only = check_json(str(room), "--no-content-checks")[0]
    assert {p["code"] for p in headers_only["problems"]} == {"too_short", "bad_resolution"}  # type: ignore[union-attr,index]
    ignored = check_json(str(room), "--ignore", "no_green_screen", "--ignore", "too_short",
                         "--ignore", "bad_resolution")[0]
    assert ignored["ok"] and "no_green_screen" in {w["code"] for w in ignored["warnings"]}  # type: ignore[union-attr,index]


def test_without_the_packages_the_rules_are_said_to_be_skipped(tmp_path):
    """No PyAV: one line saying what is skipped and the command that installs it."""
    script = ("import sys; sys.modules['av'] = None; from uploader.cli import main; "
              "main(['check', sys.argv[1]])")
    ran = subprocess.run([sys.executable, "-c", script, str(SAMPLES / "landscape_1080p.mp4")],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    assert ran.stderr.count("skipped") == 1 and content.INSTALL in ran.stderr


# The gate: `uploader upload` refuses before the confirm, and a re-run resumes.

@pytest.fixture(scope="module")
def real_scene_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-minute 1080p real-scene recording with a face and good sound."""
    folder = tmp_path_factory.mktemp("review")
    return media.write_video(folder / "room.mp4", _picture_of("real_scene"), 180,
                             sound=[(16.0, "silence"), (160.0, "speech"), (4.0, "silence")])


@pytest.mark.slow
def test_upload_stops_before_the_confirm_and_a_fixed_rerun_sends_nothing_again(
        emulator_thread: RunningEmulator, tmp_path, real_scene_video):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    args = ["upload", str(real_scene_video), "--name", "room", "--json",
            "--id-card-front", str(SAMPLES / "id_card_front.jpg"),
            "--id-card-back", str(SAMPLES / "id_card_back.jpg"),
            "--grant-file", str(SAMPLES / "grant_letter.pdf"), "--submit"]
    refused = run_cli(*args, env=env)
    assert refused.returncode == 3, refused.stderr
    said = json.loads(refused.stdout)
    job_id = said["job_id"]
    assert job_id and "not a green screen" in said["message"]
    assert "--ignore no_green_screen" in refused.stderr
    job = emulator_thread.emulator.store.jobs[job_id]
    assert job["state"] == "WAIT_FILE_UPLOAD"  # nothing confirmed, nothing submitted
    assert stored_parts(emulator_thread, job_id)  # the parts kept

    fixed = run_cli(*args, "--no-background-replacement", env=env)
    assert fixed.returncode == 0, fixed.stderr
    result = json.loads(fixed.stdout)
    assert result["job_id"] == job_id
    assert result["bytes_uploaded"] == 0  # every part was stored by the refused run
    assert job["is_background_replacement"] is False
    assert result["state"] in ("MANUAL_VERIFYING", "AUTO_VERIFYING", "WAIT_USER_CONFIRM")


@pytest.mark.slow
def test_upload_takes_an_ignored_problem_and_no_content_checks(
        emulator_thread: RunningEmulator, tmp_path, real_scene_video):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    ignored = run_cli("upload", str(real_scene_video), "--name", "ignored", "--json",
                      "--ignore", "no_green_screen", env=env)
    assert ignored.returncode == 0, ignored.stderr
    warnings = json.loads(ignored.stdout)["files"][0]["warnings"]
    assert "no_green_screen" in {w["code"] for w in warnings}
    skipped = run_cli("upload", str(real_scene_video), "--name", "unchecked", "--json",
                      "--no-content-checks", env=env)
    assert skipped.returncode == 0, skipped.stderr
    warnings = json.loads(skipped.stdout)["files"][0]["warnings"]
    assert "no_green_screen" not in {w["code"] for w in warnings}


@pytest.mark.slow
async def test_the_analysis_runs_beside_the_transfer_and_gates_the_confirm(
        tmp_path, real_scene_video, caplog):
    """Events in order: the parts start, the analysis ends while they still go, and only
    then the confirm; the refusal keeps every part stored. Ordered by construction, not by
    timing: the storage takes the parts at a crawl until the verdict is in, then at full
    speed."""
    import logging
    import time

    from samples.make_samples import grow
    from tests.conftest import emulator_config
    from tests.uploads import Recorder
    from uploader import AsyncClient, Job, Limits, Settings
    from uploader._errors import PreflightError
    from uploader.emulator import start_emulator

    events: list[tuple[float, str]] = []
    size = 24 * 2**20  # more than the sockets' buffers hold, so that bytes are told as sent
    video = tmp_path / "room.mp4"
    grow(real_scene_video, video, size)
    # The crawl set after the start: the sockets keep loopback's buffers (an emulator
    # started with a link rate gives small windows, and a chunk would not be told as sent
    # before the verdict).
    running = await start_emulator(emulator_config(tmp_path / "emulator"))
    loop = asyncio.get_running_loop()
    faults = running.emulator.faults
    faults.link_rate = 64 * 1024.0

    class Watching(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("content rules:"):
                events.append((time.monotonic(), "judged"))
                loop.call_soon_threadsafe(setattr, faults, "link_rate", None)

    handler = Watching()
    logging.getLogger("uploader").addHandler(handler)
    caplog.set_level(logging.INFO, logger="uploader")
    recorder = Recorder(watch=lambda done, total: events.append((time.monotonic(), "bytes")),
                        at_step=lambda step, job_id: events.append((time.monotonic(), step)))
    try:
        # Two pieces at a time: the sockets' buffers of as many as `auto` opens on a crawling
        # link (each holds megabytes on loopback) would take the whole video at once.
        async with AsyncClient(Settings.from_env(running.client_env()),
                               limits=Limits(concurrency=2),
                               state_dir=tmp_path / "state") as client:
            with pytest.raises(PreflightError) as refused:
                await client.upload(Job.of(video, name="beside"),
                                    progress=recorder)
    finally:
        logging.getLogger("uploader").removeHandler(handler)
        await running.stop()
    order = [what for _, what in sorted(events)]
    judged = order.index("judged")
    assert "bytes" in order[:judged]  # the parts went before the verdict was in ...
    assert "bytes" in order[judged + 1:]  # ... and went on after it
    assert not any("confirm" in what.lower() for what in order)  # refused before any confirm
    assert refused.value.job_id is not None
    assert recorder.done[-1] == size  # every part stored, for the re-run


@pytest.mark.slow
def test_upload_judges_each_case_before_the_confirm(emulator_thread: RunningEmulator,
                                                    tmp_path):
    """3-minute videos (a frame every 10 s): no face and a sideways picture stop the upload
    with exit 3 and nothing confirmed; advice (dark, two faces) is carried in the result."""
    from fractions import Fraction

    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    sound = [(16.0, "silence"), (160.0, "speech"), (4.0, "silence")]
    upright = media.scene(H, W, faces=((0.5, 0.4, 0.45),))
    cases = {
        "no_face": (media.scene(W, H, faces=()), 3, "no_face"),
        "sideways": (np.ascontiguousarray(np.rot90(upright)), 3, "sideways"),
        "dark_two": (media.scene(W, H, faces=((0.3, 0.5, 0.7), (0.7, 0.5, 0.7)),
                                 brightness=0.3), 0, "too_dark"),
    }
    for name, (picture, code, finding) in cases.items():
        video = media.write_video(tmp_path / f"{name}.mp4", picture, 180, fps=Fraction(1, 10),
                                  sound=sound)
        ran = run_cli("upload", str(video), "--name", name, "--json", env=env)
        assert ran.returncode == code, (name, ran.stderr)
        said = json.loads(ran.stdout)
        job = emulator_thread.emulator.store.jobs[said["job_id"]]
        if code == 3:
            assert finding in ran.stderr and job["state"] == "WAIT_FILE_UPLOAD"
            assert job["uploads"].get("training_video")  # still open: not confirmed
        else:
            warned = {w["code"] for w in said["files"][0]["warnings"]}
            assert {"too_dark", "several_faces"} <= warned, warned
