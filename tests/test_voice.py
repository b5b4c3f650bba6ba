"""Voice training jobs: recordings made at test time (the standard library's `wave`), the
whole flow against the emulator, kill -9 and resume, every preflight rule on both sides of
its line, a review failure explained per file, and the official SDK driving the emulator's
voice calls."""

from __future__ import annotations

import array
import functools
import json
import math
import signal
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from tests.uploads import cli_env, run_cli, start_cli
from uploader.emulator import EmulatorConfig, EmulatorThread, RunningEmulator
from uploader.preflight.recordings import check_recordings

CN = "今天天气很好我们一起去公园散步吧"  # Chinese punctuation is fine too; ruff flags it
EN = "The weather is fine today, let us walk in the park."
LETTER = str(SAMPLES / "grant_letter.pdf")


def write_wav(path: Path, seconds: float, *, rate: int = 48_000, channels: int = 1,
              level: float = 0.25) -> Path:
    """A tone of `seconds` at `level` of full scale (past 1: driven into clipping)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(_tone(seconds, rate, channels, level))
    return path


@functools.cache
def _tone(seconds: float, rate: int, channels: int, level: float) -> bytes:
    cycle = [max(-32768, min(32767, int(32767 * level * math.sin(2 * math.pi * t / 40))))
             for t in range(40)]  # a 40-sample cycle: 200 Hz at 8 kHz, 1.2 kHz at 48 kHz
    one = array.array("h", [v for v in cycle for _ in range(channels)]).tobytes()
    count = round(seconds * rate)
    return (one * (count // 40 + 1))[:count * 2 * channels]


def recordings(folder: Path, count: int = 20, *, seconds: float = 4.0, text: str = CN,
               rate: int = 8_000) -> Path:
    """`count` sentences of `seconds` each (8 kHz: quick to write; 48 kHz is only advised)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        write_wav(folder / f"{index}.wav", seconds, rate=rate)
        (folder / f"{index}.txt").write_text(text, encoding="utf-8")
    return folder


def voice_args(path: Path, name: str, *more: str) -> list[str]:
    return ["voice", "upload", str(path), "--name", name, "--edition", "basic", "--sex",
            "FEMALE", "--language", "CN", "--grant-file", LETTER, "--json", *more]


def codes(reports, attribute: str = "problems") -> set[str]:
    return {p.code for r in reports for p in getattr(r, attribute)}


@pytest.fixture(scope="module")
def basic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recordings(tmp_path_factory.mktemp("voice") / "basic")


@pytest.mark.parametrize("mode", ["--segments", "--package"])
def test_a_basic_job_from_a_folder_to_succeed_in_one_command(
        emulator_thread: RunningEmulator, tmp_path, basic, mode):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    ran = run_cli(*voice_args(basic, f"voice {mode}", mode, "--commit", "--wait"), env=env)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["state"] == "SUCCEED" and result["asset_id"]
    if mode == "--segments":
        assert result["sentences_sent"] == list(range(20))
        assert result["files_sent"] == ["letter"]
    else:
        assert result["files_sent"] == ["package", "letter"]
    job = next(j for j in emulator_thread.emulator.store.voice_jobs
               if j["job_id"] == result["job_id"])
    assert job["create_type"] == mode.strip("-").upper().rstrip("S")
    again = run_cli(*voice_args(basic, f"voice {mode}", mode, "--commit"), env=env)
    assert again.returncode == 0, again.stderr  # a re-run: a new job, none resent to the old
    status = run_cli("voice", "status", result["job_id"], "--json", env=env)
    assert json.loads(status.stdout)["state"] == "SUCCEED"


@pytest.mark.slow
def test_kill_9_after_sentence_7_then_resume_sends_only_the_rest(tmp_path, basic):
    data = tmp_path / "emulator"
    # Slow links: each sentence takes a moment, so the kill lands where it is aimed.
    config = EmulatorConfig(data_dir=data, review_delay=0.0, link_rate=400_000.0)
    with EmulatorThread(config) as running:
        env = cli_env(running.client_env(), tmp_path / "state")
        process = start_cli("-v", *voice_args(basic, "killed", "--commit"), env=env)
        assert process.stderr is not None
        for line in process.stderr:
            if "sentence 7 confirmed" in line:
                process.send_signal(signal.SIGKILL)
                break
        process.wait(timeout=30)
        process.stderr.close()
        if process.stdout is not None:
            process.stdout.close()
        assert process.returncode == -signal.SIGKILL
        job = running.emulator.store.voice_jobs[-1]
        confirmed_before = list(job["confirmed"])
        assert confirmed_before[:8] == list(range(8)) and len(confirmed_before) <= 9
        resumed = run_cli(*voice_args(basic, "killed", "--commit", "--wait"), env=env)
        assert resumed.returncode == 0, resumed.stderr
        result = json.loads(resumed.stdout)
        assert result["job_id"] == job["job_id"]  # found again by the journal
        assert len(result["sentences_sent"]) <= 13 and min(result["sentences_sent"]) >= 8
        assert result["state"] == "SUCCEED"


def test_a_text_that_does_not_match_stops_at_its_sentence(emulator_thread, tmp_path):
    folder = recordings(tmp_path / "rec")
    (folder / "3.txt").write_text("MISMATCH 这不是录音里说的话", encoding="utf-8")
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    ran = run_cli(*voice_args(folder, "mismatch", "--commit"), env=env)
    assert ran.returncode == 3
    assert "text_mismatch" in ran.stderr and "3.txt" in ran.stderr
    job = emulator_thread.emulator.store.voice_jobs[-1]
    assert job["confirmed"] == [0, 1, 2] and job["state"] == "UPLOADING"
    (folder / "3.txt").write_text(CN, encoding="utf-8")
    fixed = run_cli(*voice_args(folder, "mismatch", "--commit"), env=env)
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(fixed.stdout)["sentences_sent"] == list(range(3, 20))


def test_a_review_failure_is_explained_per_file(tmp_path, basic):
    config = EmulatorConfig(data_dir=tmp_path / "emulator", review_delay=0.0,
                            voice_review_outcome="AUDIT_FAILED:MSS.20020016")
    with EmulatorThread(config) as running:
        env = cli_env(running.client_env(), tmp_path / "state")
        args = [a for a in voice_args(basic, "refused", "--package", "--commit", "--wait")
                if a != "--json"]
        ran = run_cli(*args, env=env)
        assert ran.returncode == 3
        assert "AUDIT_FAILED" in ran.stdout and "MSS.20020016" in ran.stdout


def test_refusals_come_before_any_job_exists(emulator_thread, tmp_path):
    folder = recordings(tmp_path / "rec", count=19)
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    before = len(emulator_thread.emulator.store.voice_jobs)
    ran = run_cli(*voice_args(folder, "short"), env=env)
    assert ran.returncode == 3 and "sentence_count" in ran.stderr
    assert len(emulator_thread.emulator.store.voice_jobs) == before
    short = recordings(tmp_path / "brief", seconds=2.5)  # 20 x 2.5 s: under basic's 60 s
    ran = run_cli(*voice_args(short, "brief"), env=env)
    assert ran.returncode == 3 and "total_duration" in ran.stderr
    assert len(emulator_thread.emulator.store.voice_jobs) == before


@pytest.mark.parametrize(("seconds", "problem", "warning"), [
    (15.5, True, False), (14.5, False, False), (2.5, False, True), (3.5, False, False)])
def test_sentence_length_on_both_sides(tmp_path, seconds, problem, warning):
    folder = recordings(tmp_path / "rec", count=20, seconds=4)
    write_wav(folder / "5.wav", seconds, rate=8_000)
    reports = check_recordings(folder, edition="basic", language="CN")
    assert ("sentence_too_long" in codes(reports)) is problem
    assert ("sentence_length" in codes(reports, "warnings")) is warning


def test_each_file_rule_on_both_sides(tmp_path):
    folder = recordings(tmp_path / "rec", count=20, seconds=4)
    assert codes(check_recordings(folder, edition="basic", language="CN")) == set()
    (folder / "1.wav").write_bytes(b"ID3" + b"\0" * 200)  # an MP3 named .wav
    (folder / "2.txt").unlink()
    (folder / "3.txt").write_text("  ", encoding="utf-8")
    (folder / "4.txt").write_bytes("今天".encode("gbk"))
    (folder / "6.txt").write_text(EN, encoding="utf-8")  # English in a CN job
    reports = check_recordings(folder, edition="basic", language="CN")
    assert codes(reports) == {"not_wav", "no_text", "empty_text", "text_not_utf8",
                              "wrong_language"}
    english = recordings(tmp_path / "en", count=20, seconds=4, text=EN)
    assert codes(check_recordings(english, edition="basic", language="EN")) == set()
    (english / "0.txt").write_text(CN, encoding="utf-8")
    assert codes(check_recordings(english, edition="basic", language="EN")) == {
        "wrong_language"}
    assert "sentence_count" in codes(check_recordings(english, edition="middle",
                                                      language="EN"))


def test_sound_advice_on_both_sides(tmp_path):
    folder = recordings(tmp_path / "rec", count=20, seconds=4, rate=48_000)
    assert codes(check_recordings(folder, edition="basic", language="CN"), "warnings") == set()
    write_wav(folder / "0.wav", 4, rate=44_100, channels=2)
    write_wav(folder / "1.wav", 4, rate=48_000, level=0.001)  # -66 dBFS: silence
    write_wav(folder / "2.wav", 4, rate=48_000, level=3.0)  # driven past full scale
    warnings = codes(check_recordings(folder, edition="basic", language="CN"), "warnings")
    assert warnings == {"wav_format", "sentence_silent", "sentence_clipping"}


def test_the_official_sdk_drives_every_voice_call(emulator_thread: RunningEmulator, tmp_path,
                                                  basic):
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
    from huaweicloudsdkmetastudio.v1 import (
        CommitShortJobRequest,
        CommitVoiceTrainingJobRequest,
        ConfirmTrainingSegmentRequest,
        CreateShortJobReq,
        CreateShortJobRequest,
        CreateTrainingBasicJobRequest,
        CreateTrainingJobReq,
        DeleteVoiceTrainingJobRequest,
        ListJobOperationLogRequest,
        ListVoiceTrainingJobRequest,
        MetaStudioClient,
        ShowJobAuditResultRequest,
        ShowJobUploadingAddressRequest,
        ShowShortJobRequest,
        ShowTenantDurationCfgRequest,
        ShowTrainingSegmentInfoRequest,
        ShowVoiceTrainingJobRequest,
    )

    env = emulator_thread.client_env()
    sdk = (MetaStudioClient.new_builder().with_credentials(BasicCredentials(
        env["CLOUD_SDK_AK"], env["CLOUD_SDK_SK"], env["METASTUDIO_PROJECT_ID"]))
        .with_endpoints([emulator_thread.url]).build())
    demo = sdk.list_voice_training_job(ListVoiceTrainingJobRequest()).jobs[0]
    assert str(demo.state) == "SUCCEED" and str(demo.job_type) == "BASIC"
    body = CreateTrainingJobReq(voice_name="sdk voice", sex="FEMALE", language="CN",
                                tag="ECOMMERCE", create_type="SEGMENT")
    created = sdk.create_training_basic_job(CreateTrainingBasicJobRequest(body=body))
    job_id = created.job_id
    links = sdk.show_job_uploading_address(ShowJobUploadingAddressRequest(job_id=job_id))
    assert len(links.segment_url.audio_uploading_url) == 20
    for index in range(20):
        audio = created.segment_uploading_url.audio_uploading_url[index]
        text = links.segment_url.txt_uploading_url[index]
        assert _put(audio, (basic / f"{index}.wav").read_bytes(), "audio/wav") == 200
        assert _put(text, (basic / f"{index}.txt").read_bytes(), "text/plain") == 200
        confirmed = sdk.confirm_training_segment(
            ConfirmTrainingSegmentRequest(job_id=job_id, index=index))
        assert confirmed.confirm_result is True
    info = sdk.show_training_segment_info(ShowTrainingSegmentInfoRequest(job_id=job_id))
    assert info.confirmed_index == list(range(20))
    with pytest.raises(ClientRequestException) as refused:  # no letter yet
        sdk.commit_voice_training_job(CommitVoiceTrainingJobRequest(job_id=job_id))
    assert refused.value.status_code == 400
    assert _put(created.authorization_letter_uploading_url, Path(LETTER).read_bytes(),
                "application/octet-stream") == 200
    sdk.commit_voice_training_job(CommitVoiceTrainingJobRequest(job_id=job_id))
    deadline = time.monotonic() + 10
    shown = sdk.show_voice_training_job(ShowVoiceTrainingJobRequest(job_id=job_id))
    while str(shown.state) != "SUCCEED" and time.monotonic() < deadline:
        time.sleep(0.1)
        shown = sdk.show_voice_training_job(ShowVoiceTrainingJobRequest(job_id=job_id))
    assert str(shown.state) == "SUCCEED" and shown.voice_authorization_url
    audit = sdk.show_job_audit_result(ShowJobAuditResultRequest(job_id=job_id))
    assert audit.system_audit_result.errors == []
    logs = sdk.list_job_operation_log(ListJobOperationLogRequest(job_id=job_id))
    assert [op.action for op in logs.operations][:2] == ["CREATE_JOB", "COMMIT_JOB"]
    durations = sdk.show_tenant_duration_cfg(ShowTenantDurationCfgRequest())
    assert durations.basic_min < durations.basic_max
    short = sdk.create_short_job(CreateShortJobRequest(
        body=CreateShortJobReq(job_type="VOICE_ASSESS", language="CN")))
    import zipfile

    zipped = tmp_path / "assess.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.write(basic / "0.wav", "0.wav")
    assert _put(short.data_uploading_url, zipped.read_bytes(), "application/zip") == 200
    sdk.commit_short_job(CommitShortJobRequest(job_id=short.job_id))
    assessed = sdk.show_short_job(ShowShortJobRequest(job_id=short.job_id))
    assert assessed.assess_result.sound.actual
    sdk.delete_voice_training_job(DeleteVoiceTrainingJobRequest(job_id=job_id))
    with pytest.raises(ClientRequestException) as gone:
        sdk.show_voice_training_job(ShowVoiceTrainingJobRequest(job_id=job_id))
    assert gone.value.status_code == 404


def test_an_unknown_path_answers_404(emulator_thread: RunningEmulator):
    request = urllib.request.Request(
        f"{emulator_thread.url}/v1/{emulator_thread.client_env()['METASTUDIO_PROJECT_ID']}"
        "/voice-training-manage/user/no-such-thing")
    with pytest.raises(urllib.error.HTTPError) as answered:
        urllib.request.urlopen(request)
    answered.value.close()
    assert answered.value.code == 404


def test_voice_assess_prints_each_measure(emulator_thread, tmp_path, basic):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    ran = run_cli("voice", "assess", str(basic), "--language", "CN", "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["state"] == "SUCCEED"
    assert {"speed", "sound", "snr", "reverb", "dnsmos_ovrl"} <= set(result["assess_result"])


def _put(url: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(url, data=body, method="PUT",
                                     headers={"Content-Type": content_type})
    with urllib.request.urlopen(request) as response:
        return int(response.status)



def test_a_rerun_sends_no_stored_zip_letter_or_sentence_again(emulator_thread, tmp_path,
                                                              basic):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    for mode in ("--package", "--segments"):
        first = run_cli(*voice_args(basic, f"again {mode}", mode), env=env)  # no commit
        assert first.returncode == 0, first.stderr
        sent = json.loads(first.stdout)
        assert not sent["committed"] and sent["bytes_uploaded"] > 0
        second = run_cli(*voice_args(basic, f"again {mode}", mode, "--commit"), env=env)
        assert second.returncode == 0, second.stderr
        again = json.loads(second.stdout)
        assert again["job_id"] == sent["job_id"] and again["committed"]
        assert (again["files_sent"], again["sentences_sent"], again["bytes_uploaded"]) == (
            [], [], 0)
    deleted = run_cli("voice", "delete", again["job_id"], "--yes", env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert all(j["job_id"] != again["job_id"] for j in emulator_thread.emulator.store.voice_jobs)


def test_links_that_expire_on_the_way_are_renewed(tmp_path, basic):
    """Links of 1 s and a slow link: the sentences' links expire before their turn; fresh
    ones are asked from uploading-address-url."""
    config = EmulatorConfig(data_dir=tmp_path / "emulator", review_delay=0.0, url_ttl=1,
                            link_rate=500_000.0)
    with EmulatorThread(config) as running:
        env = cli_env(running.client_env(), tmp_path / "state")
        ran = run_cli(*voice_args(basic, "expiring", "--commit", "--wait"), env=env)
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout)["state"] == "SUCCEED"
        refused = sum(c["refused"] for c in running.emulator.faults.ledger.values())
        assert refused >= 1  # links expired on the way, and fresh ones took the files


def test_a_batch_carries_video_and_voice_rows(emulator_thread, tmp_path, basic):
    from tests.conftest import GOOD_VIDEO
    from tests.uploads import REQUIRED

    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    manifest = tmp_path / "rows.csv"
    files = ",".join(str(REQUIRED[k]) for k in ("id_card_front", "id_card_back", "grant_file"))
    manifest.write_text(
        "kind,path,name,edition,voice_sex,voice_language,id_card_front,id_card_back,"
        "grant_file\n"
        f"video,{GOOD_VIDEO},face,,,,{files}\n"
        f"voice,{basic},voice row,basic,FEMALE,CN,,,{LETTER}\n"
        f"voice,{basic},bad row,basic,FEMALE,XX,,,{LETTER}\n")
    ran = run_cli("batch", str(manifest), "--submit", "--wait", "--report",
                  str(tmp_path / "report.jsonl"), env=env)
    results = [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()]
    by_name = {Path(r["path"]).name: r for r in results}
    assert ran.returncode == 6, ran.stderr  # one row invalid
    assert by_name[GOOD_VIDEO.name]["outcome"] == "ok"
    voiced = [r for r in results if r["path"] == str(basic)]
    assert sorted(r["outcome"] for r in voiced) == ["invalid", "ok"]
    ok = next(r for r in voiced if r["outcome"] == "ok")
    assert ok["state"] == "SUCCEED"
