"""The front door: the client pair, the job description, errors by meaning, the pure plans,
and the README's library examples run as written."""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import uploader
from tests.conftest import GOOD_VIDEO
from tests.uploads import REQUIRED, Recorder, video_of
from uploader import AsyncClient, Client, Job, JobStateError, TransferError, UsageError
from uploader.emulator import RunningEmulator
from uploader.transfer.plan import Piece
from uploader.workflow.finish import submit as submit_for_review
from uploader.workflow.job import Next, next_step
from uploader.workflow.send import judge_stored

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


# ---- the public names ------------------------------------------------------------------


def test_public_names_are_pinned():
    assert uploader.__all__ == sorted(uploader.__all__)
    assert set(uploader.__all__) == {
        "ApiError", "AsyncClient", "Backoff", "BrokerError", "Client", "CommandResult",
        "ConfirmError", "CredentialsError", "Facts", "FileChangedError", "FileFacts",
        "FileKind", "FileResult", "Job", "JobDetail", "JobList", "JobLockedError", "JobOptions",
        "JobStateError", "JobSummary",
        "JobUrls", "JournalError", "Limits", "LocalFileError", "MalformedAnswerError",
        "MetaStudioClient", "MissingFilesError", "OperationLog", "PlanError",
        "PreflightError", "Problem", "Progress", "RefusedError", "Remedy", "Report", "Settings",
        "SettingsError", "ShortJob", "Step", "SubmitResult", "TransferBudget", "TransferConfig",
        "TransferError", "UnreachableError", "UploadResult", "UploadedPart", "UploaderError",
        "UsageError", "VoiceDetail", "VoiceJob", "VoiceJobInfo", "VoiceJobList", "VoiceResult",
        "check_video", "check_video_async",
        "submit_job", "submit_job_sync", "upload_video", "upload_video_sync",
    }
    # What the package really exports is what __all__ says: nothing more, nothing less
    # (each name resolves, loaded on first use).
    exported = {name for name in dir(uploader) if not name.startswith("_")
                and not isinstance(getattr(uploader, name), type(uploader))}
    assert exported == set(uploader.__all__)
    with pytest.raises(AttributeError):
        uploader.NotAName  # type: ignore[attr-defined]  # noqa: B018


def test_no_exit_code_outside_the_cli():
    found = [str(path.relative_to(ROOT)) for path in (ROOT / "uploader").rglob("*.py")
             if "exit_code" in path.read_text() and "cli" not in path.parts]
    assert found == []


def _texts_of(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal of `tree` (f-string parts included) but its docstrings: what
    its messages, raised or logged, are made of."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def test_the_library_speaks_of_keywords_never_of_flags_or_commands():
    """Issue 30, item 4: a remedy travels as data; the CLI alone writes flags and commands.
    The emulator is a server of its own, and the CLI is where the words belong."""
    said = []
    for path in sorted((ROOT / "uploader").rglob("*.py")):
        if {"cli", "emulator"} & set(path.parts):
            continue
        for line, text in _texts_of(ast.parse(path.read_text())):
            if re.search(r"(?<![\w-])--[a-z]|\buploader [a-z]", text):
                said.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert said == []


# ---- the client pair -------------------------------------------------------------------


@pytest.mark.slow
async def test_a_client_shares_its_budget_and_session_between_uploads(
        emulator: RunningEmulator, settings, tmp_path: Path):
    emulator.emulator.faults.link_rate = 4 * MiB
    videos = [video_of(tmp_path, 4 * MiB, f"v{n}.mp4") for n in range(3)]
    told = [Recorder() for _ in videos]
    async with AsyncClient(settings, limits=uploader.Limits(concurrency=3),
                           state_dir=tmp_path / "state") as client:
        results = await asyncio.gather(*(
            client.upload(Job(video=v, name=v.stem, parts=4), progress=p)
            for v, p in zip(videos, told, strict=True)))
    assert emulator.emulator.faults.most_in_flight == 3  # 12 pieces wanted at once
    assert emulator.emulator.faults.most_connections <= 3 + 2
    for video, result, progress in zip(videos, results, told, strict=True):
        assert result.bytes_uploaded == video.stat().st_size
        assert (progress.done[-1], progress.total) == (video.stat().st_size,) * 2
        assert [step for step, _ in progress.steps] == ["sending", "confirming", "confirmed"]


def test_a_closed_client_reopens_cleanly_sync_and_async(emulator_thread, tmp_path: Path):
    """Issue 30: the budget's places were made with the client and bound to the first loop
    that waited on them; a client closed (its loop gone) and used again failed."""
    settings = uploader.Settings.from_env(emulator_thread.client_env())
    video = video_of(tmp_path, 4 * MiB)
    client = Client(settings, state_dir=tmp_path / "sync")
    for round_ in range(2):  # 32 parts, auto's 16 places: pieces wait on them each time
        with client:
            result = client.upload(Job(video=video, name=f"sync {round_}", parts=32))
            assert result.parts_uploaded == 32
    asynchronous = AsyncClient(settings, state_dir=tmp_path / "async")

    async def once(round_: int) -> int:
        async with asynchronous:
            job = Job(video=video, name=f"async {round_}", parts=32)
            return (await asynchronous.upload(job)).parts_uploaded

    assert [asyncio.run(once(n)) for n in range(2)] == [32, 32]  # a new loop each time


def test_a_budget_is_shared_in_one_loop_and_refused_across_running_loops(
        emulator_thread, tmp_path: Path):
    from uploader.transfer.budget import TransferBudget

    settings = uploader.Settings.from_env(emulator_thread.client_env())
    emulator_thread.emulator.faults.link_rate = 8 * MiB  # parts overlap
    videos = [video_of(tmp_path, 4 * MiB, f"v{n}.mp4") for n in range(2)]
    budget = TransferBudget(concurrency=3)

    async def both() -> None:
        async with (AsyncClient(settings, budget=budget, state_dir=tmp_path / "a") as one,
                    AsyncClient(settings, budget=budget, state_dir=tmp_path / "b") as two):
            await asyncio.gather(one.upload(Job(video=videos[0], name="a", parts=8)),
                                 two.upload(Job(video=videos[1], name="b", parts=8)))

    asyncio.run(both())
    assert emulator_thread.emulator.faults.most_in_flight == 3 == budget.most_in_flight
    with Client(settings, budget=budget, state_dir=tmp_path / "c") as first:
        second = Client(settings, budget=budget, state_dir=tmp_path / "d")
        with pytest.raises(UsageError, match="in use by another event loop"):
            second.__enter__()
        second.close()
        assert first.upload(Job(video=videos[0], name="c", parts=8)).parts_uploaded == 8
    with Client(settings, budget=budget, state_dir=tmp_path / "d") as later:  # first is gone
        assert later.upload(Job(video=videos[1], name="d", parts=8)).parts_uploaded == 8


def test_the_sync_client_works_inside_a_running_event_loop(emulator_thread, tmp_path: Path):
    settings = uploader.Settings.from_env(emulator_thread.client_env())

    async def inside() -> tuple[str, str]:
        with Client(settings, state_dir=tmp_path / "state") as client:
            result = client.upload(Job.of(GOOD_VIDEO, name="in a loop", **REQUIRED),
                                   submit=True)
            again = uploader.upload_video_sync(GOOD_VIDEO, name="in a loop", **REQUIRED,
                                               settings=settings, state_dir=tmp_path / "state")
            assert again.job_id == result.job_id and again.bytes_uploaded == 0
            return result.job_id, client.status(result.job_id).state

    job_id, state = asyncio.run(inside())
    assert state in ("AUTO_VERIFYING", "MANUAL_VERIFYING")
    assert job_id in emulator_thread.emulator.store.jobs


def test_a_batch_from_synchronous_code_and_a_row_through_a_client(emulator_thread,
                                                                   tmp_path: Path):
    from uploader.batch import Row, upload_batch_sync, upload_row

    settings = uploader.Settings.from_env(emulator_thread.client_env())
    videos = [video_of(tmp_path, 2 * MiB, f"b{n}.mp4") for n in range(3)]
    rows = [Row(n, Job(video=v, name=v.stem)) for n, v in enumerate(videos, start=1)]
    results = upload_batch_sync(rows, files=2, settings=settings, state_dir=tmp_path / "state")

    async def again() -> str:
        async with AsyncClient(settings, state_dir=tmp_path / "state") as client:
            result = await upload_row(client, rows[0])
            return f"{result.outcome} {result.job_id}"

    assert sorted(r.outcome for r in results) == ["ok"] * 3
    outcome, job_id = asyncio.run(again()).split()
    assert outcome == "skipped" and job_id in {r.job_id for r in results}


async def test_submit_is_idempotent_and_refuses_a_failed_review(emulator, settings, tmp_path):
    async with AsyncClient(settings, state_dir=tmp_path / "state") as client:
        result = await client.upload(Job.of(GOOD_VIDEO, name="twice", **REQUIRED), submit=True)
        again = await client.submit(result.job_id, wait=True)
        assert again.already and again.state == "MANUAL_VERIFYING"
        emulator.emulator.store.jobs[result.job_id]["state"] = "AUTO_VERIFY_FAILED"
        with pytest.raises(JobStateError) as caught:
            await client.submit(result.job_id)
    assert caught.value.job_id == result.job_id and caught.value.state == "AUTO_VERIFY_FAILED"
    assert caught.value.remedy is uploader.Remedy.UPLOAD_FILES
    assert f"job_id={result.job_id!r}" in caught.value.message  # the library's own words


async def test_a_command_is_tried_at_most_the_policys_count(emulator, settings, tmp_path,
                                                            caplog):
    async with AsyncClient(settings, state_dir=tmp_path / "state") as client:
        job_id = (await client.upload(Job.of(GOOD_VIDEO, name="lost", **REQUIRED))).job_id
    faults = emulator.emulator.faults
    faults.api_statuses = [503] * 100  # every answer lost, those of the checks included
    caplog.set_level(logging.INFO, logger="uploader")
    quick = uploader.Backoff(attempts=4, base=0.01, cap=0.05)
    async with uploader.MetaStudioClient(settings, backoff=quick) as api:
        with pytest.raises(TransferError, match="SUBMITVERIFYING did not get through"):
            await submit_for_review(api, job_id)
        attempts = api.backoff.attempts
    # The command is tried the policy's count (it was 24 with a retry inside a retry); before
    # each retry, show job is asked (with its own tries) whether it took effect.
    assert caplog.text.count("SUBMITVERIFYING failed") == attempts - 1
    assert 100 - len(faults.api_statuses) == attempts * (1 + attempts)


# ---- the job description ---------------------------------------------------------------


@pytest.mark.parametrize("values", [
    {}, {"name": "a", "job_id": "b"}, {"name": "x", "kind_that_is_not": "f.jpg"},
    {"name": "x", "tags": "one"}, {"name": "x", "parts": 1001}, {"name": "x", "cover": 3},
    {"name": "x", "training_video": "again.mp4"},
])
def test_a_job_is_checked_when_it_is_made(values):
    with pytest.raises(UsageError):
        Job.of("talk.mp4", **values)


def test_a_job_is_frozen_and_lists_its_files_in_the_tables_order():
    job = Job.of("talk.mp4", name="n", cover="c.jpg", id_card_front="f.jpg", tags=["t"])
    assert [k.name for k in job.paths] == ["training_video", "id_card_front", "cover"]
    assert job.labels == {"tags": ["t"]}
    with pytest.raises(AttributeError):
        job.name = "other"  # type: ignore[misc]


def test_a_new_file_kind_is_one_row(tmp_path: Path):
    """A kind added to the table shows up as a flag (with its help), a manifest column and a
    field of the job, with nothing else changed."""
    script = textwrap.dedent('''
        import json, sys
        from click.testing import CliRunner
        from uploader import _files

        _files.KINDS += (_files.FileKind(
            name="voice_sample", title="voice sample", link_field="voice_sample_upload_url",
            download_field="voice_sample_download_url", rule="audio",
            description="A sample of the voice (zip)."),)

        from uploader import Job
        from uploader.batch import manifest_columns, read_manifest
        from uploader.cli import main

        help = CliRunner().invoke(main, ["upload", "--help"]).output
        batch_help = CliRunner().invoke(main, ["batch", "--help"]).output
        job = Job.of("talk.mp4", name="n", voice_sample="v.zip")
        [row] = read_manifest(sys.argv[1])
        print(json.dumps({"flag": "--voice-sample" in help and "A sample of the voice" in help,
                          "batch_help": "voice_sample" in " ".join(batch_help.split()),
                          "column": "voice_sample" in manifest_columns(),
                          "field": str(job.files["voice_sample"]),
                          "row": str(row.job.files["voice_sample"].name),
                          "kinds": [k.name for k in job.paths]}))
    ''')
    manifest = tmp_path / "rows.csv"
    manifest.write_text("path,name,voice_sample\nt.mp4,n,s.zip\n")
    run = subprocess.run([sys.executable, "-c", script, str(manifest)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "flag": True, "batch_help": True, "column": True, "field": "v.zip", "row": "s.zip",
        "kinds": ["training_video", "voice_sample"]}


# ---- the pure plans, without a server --------------------------------------------------


@pytest.mark.parametrize(("state", "facts", "expected"), [
    ("WAIT_FILE_UPLOAD", {}, Next.NEW_LINKS),
    ("WAIT_FILE_UPLOAD", {"links_usable": True}, Next.REUSE_LINKS),
    ("AUTO_VERIFY_FAILED", {"links_usable": True, "review_failed": True}, Next.NEW_LINKS),
    ("MANUAL_VERIFYING", {}, Next.REFUSE),
    ("MANUAL_VERIFYING", {"adopted": True}, Next.RECORD_SUBMITTED),
    ("AUTO_VERIFYING", {"confirmed": True}, Next.RECORD_SUBMITTED),
    ("MANUAL_VERIFYING", {"submitted": True}, Next.NOTHING),
    ("WAIT_FILE_UPLOAD", {"submitted": True}, Next.NOTHING),
])
def test_what_to_do_with_a_job_found(state, facts, expected):
    given = {"submitted": False, "confirmed": False, "adopted": False,
             "review_failed": False, "links_usable": False} | facts
    assert next_step(state, **given) is expected


def _piece(number: int, kind: str = "training_video") -> Piece:
    return Piece(kind, number, Path("v.mp4"), 0, 1, "application/octet-stream", f"part {number}")


MD5 = {n: f"{n:032x}" for n in range(1, 5)}


def test_stored_pieces_judged_against_the_file_and_the_journal():
    pieces = [_piece(n) for n in range(1, 5)]
    key = {n: ("training_video", n) for n in range(1, 5)}
    verdict = judge_stored(
        pieces, stored={key[1]: f'"{MD5[1]}"', key[2]: f'"{MD5[2]}"', key[3]: "sse-etag"},
        journal={key[1]: MD5[1], key[3]: MD5[3]},
        local={key[1]: MD5[1], key[2]: MD5[2], key[3]: MD5[3]}, job_id="j")
    # 4 is not stored; 3's ETag says nothing, but the journal sent it; 2 is learned.
    assert [p.number for p in verdict.missing] == [4]
    assert verdict.learned == {key[2]: MD5[2]}


def test_a_stored_piece_that_is_not_the_file_is_a_changed_file_or_a_replaced_one():
    part, cover = _piece(1), _piece(1, "cover")
    # A part no journal of ours knows: another machine's, or an encrypted bucket's ETag
    # (which looks like an MD5): replaced, so that every part is this file's.
    assert judge_stored([part], stored={part.key: f'"{MD5[2]}"'}, journal={},
                        local={part.key: MD5[1]}, job_id="j").missing == [part]
    with pytest.raises(uploader.FileChangedError, match="changed since part 1 was sent"):
        judge_stored([part], stored={part.key: f'"{MD5[1]}"'}, journal={part.key: MD5[2]},
                     local={part.key: MD5[1]}, job_id="j")
    verdict = judge_stored([cover], stored={cover.key: f'"{MD5[2]}"'}, journal={},
                           local={cover.key: MD5[1]}, job_id="j")
    assert verdict.missing == [cover]  # another file stands where the cover goes: replaced


# ---- the import graph ------------------------------------------------------------------


def _import_graph() -> dict[str, set[str]]:
    """Each module of the package and the package's modules it imports, anywhere in it (a
    lazy import is an arrow too; an import only for type checking is not)."""
    modules = {}
    for path in (ROOT / "uploader").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(block.test)
                       for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                found = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            # Importing a module imports its package (its __init__) first.
            found += [m.rsplit(".", depth)[0] for m in found for depth in (1, 2)]
            graph[name] |= {m for m in found if m in modules and m != "uploader"
                            and not name.startswith(m + ".") and m != name}
    return graph


def test_the_import_graph_has_no_circle_and_api_never_looks_up():
    graph = _import_graph()
    front = ("uploader._client", "uploader._job", "uploader._limits", "uploader.workflow",
             "uploader.batch", "uploader.celery", "uploader.cli")
    upward = {f"{a} -> {b}" for a, deps in graph.items() if a.startswith("uploader.api")
              for b in deps if b.startswith(front)}
    assert upward == set()
    circles = []
    for start in graph:  # a path from a module back to itself
        seen, stack = set(), [(start, [start])]
        while stack:
            module, path = stack.pop()
            for nxt in graph[module]:
                if nxt == start:
                    circles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert circles == []
