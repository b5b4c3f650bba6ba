"""Measure `uploader batch --broker` (Celery workers on RabbitMQ) against a local batch.

    python benchmarks/celery.py           # 16 x 32 MiB and 64 x 1 MiB
    python benchmarks/celery.py --smoke   # the same steps on tiny files

(j) wall time of the same manifest uploaded by a local `uploader batch --files 4` and by
`uploader batch --broker` with two workers of two processes each (four rows at once either
way), all on this machine against `uploader emulator`; (k) the broker's cost per row: 64
small rows, seconds per row either way. Needs Debian's rabbitmq-server (started here on free
ports, as the tests do). On 2 cores the broker, the workers, the emulator and the batch share
the CPUs: a figure for the overhead, not for scale-out.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch import batch, copies, manifest
from harness import MIB, Table, _default_workdir, emulator, measure

from tests.broker import RabbitMQ, Worker


def broker_batch(env: dict[str, str], rows: Path, folder: Path, broker: RabbitMQ
                 ) -> tuple[float, dict[str, object]]:
    command = [sys.executable, "-m", "uploader", "batch", str(rows), "--json", "--quiet",
               "--broker", broker.url]
    run = measure(command, env)
    return run.wall, run.result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument("--workdir", type=Path, default=_default_workdir())
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="uploader-celery-", dir=options.workdir))
    size = 2 * MIB if options.smoke else 32 * MIB
    table = Table()
    broker = RabbitMQ(folder / "rabbitmq")
    broker.start()
    workers: list[Worker] = []
    try:
        for step, (count, each) in enumerate(((16, size), (64, MIB))):
            label = "(j)" if step == 0 else "(k)"
            with emulator(folder) as env:
                env = env | {"UPLOADER_BROKER_URL": broker.url,
                             "UPLOADER_QUEUE": f"bench-{step}"}
                workers = [Worker(f"w{n}", env, folder / "workers", concurrency=2,
                                  part_concurrency=8) for n in range(2)]
                for worker in workers:
                    worker.wait_ready()
                videos = copies(folder, count, each, f"{label[1]}l")
                # Four rows at once, 32 part PUTs in flight, either way; other names, so
                # that the second run uploads everything again.
                local, _, summary = batch(env, manifest(folder, videos, 4, "local"), folder,
                                          "--files", "4", "--concurrency", "32")
                assert summary["ok"] == count, summary
                remote, summary = broker_batch(env, manifest(folder, videos, 4, "remote"),
                                               folder, broker)
                assert summary["ok"] == count, summary
                table.add(f"{label} {count} x {each / MIB:.0f} MiB: local batch --files 4",
                          f"{local:.2f} s ({local / count:.3f} s/row)")
                table.add(f"{label} the same, --broker, 2 workers x 2 (process wall)",
                          f"{remote:.2f} s ({remote / count:.3f} s/row, "
                          f"{remote / local:.2f} x local)")
                for worker in workers:
                    worker.stop()
                for path in videos:
                    path.unlink()
    finally:
        for worker in workers:
            worker.stop()
        broker.close()
        shutil.rmtree(folder, ignore_errors=True)
    table.print()


if __name__ == "__main__":
    main()
