"""Shared fixtures: an emulator on a real loopback socket, and clients pointed at it."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from uploader import MetaStudioClient, Settings
from uploader.emulator import EmulatorConfig, EmulatorThread, RunningEmulator, start_emulator

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
GOOD_VIDEO = SAMPLES / "landscape_1080p.mp4"

EmulatorFactory = Callable[..., "AsyncIterator[RunningEmulator]"]


def emulator_config(data_dir: Path, **overrides: Any) -> EmulatorConfig:
    """A fast-reviewing emulator configuration; `overrides` set any other field."""
    return EmulatorConfig(data_dir=data_dir, **{"review_delay": 0.0, "seed": 7, **overrides})


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[RunningEmulator]:
    """An emulator in the test's event loop."""
    running = await start_emulator(emulator_config(tmp_path / "emulator"))
    yield running
    await running.stop()


@pytest.fixture
def emulator_thread(tmp_path: Path) -> Iterator[RunningEmulator]:
    """An emulator in a thread of its own, for synchronous callers and subprocesses."""
    with EmulatorThread(emulator_config(tmp_path / "emulator")) as running:
        yield running


@pytest.fixture
def settings(emulator: RunningEmulator) -> Settings:
    return Settings.from_env(emulator.client_env())


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[MetaStudioClient]:
    async with MetaStudioClient(settings) as api:
        yield api


@pytest.fixture(autouse=True)
def content_checks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The content rules (seconds of decoding per video) run only in the tests whose subject
    they are (marked `content_checks`); the others set UPLOADER_CONTENT_CHECKS=0, as a
    pipeline whose videos are checked elsewhere would."""
    if request.node.get_closest_marker("content_checks") is None:
        monkeypatch.setenv("UPLOADER_CONTENT_CHECKS", "0")
    else:
        monkeypatch.delenv("UPLOADER_CONTENT_CHECKS", raising=False)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MetaStudio or SDK variable from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("METASTUDIO_", "CLOUD_SDK_", "HUAWEICLOUD_SDK_")):
            monkeypatch.delenv(name)


def copy_sample(name: str, target: Path) -> Path:
    shutil.copyfile(SAMPLES / name, target)
    return target


def pytest_collection_finish(session: pytest.Session) -> None:
    """Launch RabbitMQ now if broker tests are to run: it boots while the tests before
    them run (tests/broker.py, EarlyBroker)."""
    if any(item.path.name == "test_celery.py" for item in session.items):
        from tests.broker import EarlyBroker

        EarlyBroker.launch()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.broker import EarlyBroker

    EarlyBroker.close()
