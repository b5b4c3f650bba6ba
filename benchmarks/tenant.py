"""Three Celery workers sharing one tenant's flow control, against one worker told the limit.

    python benchmarks/tenant.py           # 24 small rows, about a minute
    python benchmarks/tenant.py --smoke   # 6 rows

(n) A batch of small rows sent by `uploader batch --broker` to three `uploader worker`
processes with no region and no METASTUDIO_API_RATES, against `uploader emulator`'s flow
control of command=3,show=3 (per tenant): each worker's pace learns the limit from the
gateway's refusals (issue 31, item 1). Printed: the API calls and the 429s among them (target:
at most 5 %), and the batch's time against the same batch on one worker given
METASTUDIO_API_RATES=command=3,show=3 (target: within 1.3x). Needs Debian's rabbitmq-server
(started here on free ports, as the tests do); the emulator runs in this process, so that
its gateway can count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch import copies, manifest
from harness import MIB, Table, _default_workdir, measure

from tests.broker import RabbitMQ, Worker
from uploader.emulator import EmulatorConfig, EmulatorThread

RATES = {"command": 3.0, "show": 3.0}


def one_batch(folder: Path, broker: RabbitMQ, videos: list[Path], workers: int,
              hint: bool, tag: str) -> tuple[float, int, int, int]:
    """The batch's wall time, its rows done, the API calls and the 429s among them."""
    data = Path(tempfile.mkdtemp(dir=folder, prefix="emulator-"))
    config = EmulatorConfig(data_dir=data, review_delay=0.0, api_rates=RATES)
    with EmulatorThread(config) as running:
        env = os.environ | running.client_env() | {"UPLOADER_BROKER_URL": broker.url,
                                                   "UPLOADER_QUEUE": f"tenant-{tag}",
                                                   "UPLOADER_WORKER_ROOTS": str(folder)}
        if hint:
            env["METASTUDIO_API_RATES"] = "command=3,show=3"
        started = [Worker(f"{tag}{n}", env, folder / "workers", concurrency=2,
                          part_concurrency=4) for n in range(workers)]
        try:
            for worker in started:
                worker.wait_ready()
            command = [sys.executable, "-m", "uploader", "batch",
                       str(manifest(folder, videos, 2, tag)), "--json", "--quiet",
                       "--broker", broker.url]
            run = measure(command, env)
        finally:
            for worker in started:
                worker.stop()
        gateway = running.emulator.gateway
        done = sum(int(str(run.result.get(k, 0))) for k in ("ok", "skipped"))
        print(f"  ({tag}: calls {dict(gateway.calls)}, 429s {dict(gateway.refused)})", flush=True)
        return run.wall, done, sum(gateway.calls.values()), sum(gateway.refused.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="6 rows")
    parser.add_argument("--workdir", type=Path, default=_default_workdir())
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="uploader-tenant-", dir=options.workdir))
    count = 6 if options.smoke else 24
    table = Table()
    broker = RabbitMQ(folder / "rabbitmq")
    broker.start()
    try:
        videos = copies(folder, count, MIB, "t")
        alone, done_alone, calls_alone, refused_alone = one_batch(
            folder, broker, videos, 1, True, "alone")
        shared, done, calls, refused = one_batch(folder, broker, videos, 3, False, "shared")
        table.add(f"(n) {count} rows, one worker told command=3,show=3: time, 429s",
                  f"{alone:.2f} s, {done_alone} done, {refused_alone} of {calls_alone} calls")
        table.add("(n) the same, three workers learning the limit: 429s / calls",
                  f"{refused} of {calls} ({refused / max(calls, 1):.1%}), {done} done",
                  "<= 5 %")
        table.add("(n) three workers learning ÷ one told", f"{shared / alone:.2f} "
                  f"({shared:.2f} s)", "<= 1.3")
    finally:
        broker.close()
        shutil.rmtree(folder, ignore_errors=True)
    table.print()


if __name__ == "__main__":
    main()
