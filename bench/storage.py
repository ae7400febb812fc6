"""Benchmark: storing one sync batch of raw messages, local files dir vs an S3-compatible bucket.

    .venv/bin/python bench/storage.py [--messages 200] [--size 20000] [--rounds 3]

Starts moto's S3 server on loopback (tests/servers/s3.py) and stores --messages distinct messages
of --size bytes per round: into a fresh local files dir (the baseline), into the bucket one PUT
after another (write_once in a loop), and into the bucket through write_many_once (what sync's
phase 2 does: eight PUTs at a time); then streams one 20 MB attachment back through open_stream
and reports the largest chunk it held. Prints the median of each and the ratios to the local
baseline. moto is a Python server on the same machine, so the absolute S3 figures say little
about AWS (higher latency per PUT, which favours the parallel writes more) and much about this
machine's load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["MAILGATE_DATA_DIR"] = tempfile.mkdtemp(prefix="mailgate-bench-")
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ.setdefault("MAILGATE_LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.core.files.storage import FileSystemStorage  # noqa: E402

from mailgate import storage, storage_url  # noqa: E402
from tests.servers.s3 import S3Server  # noqa: E402


def batch(round_no: int, count: int, size: int) -> list[tuple[str, bytes]]:
    items = []
    for n in range(count):
        head = f"Subject: bench {round_no}-{n}\r\n\r\n".encode()
        items.append((f"raw/{round_no:02x}/{round_no}-{n}.eml", head + os.urandom(size)))
    return items


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with S3Server.start() as server:
        env = server.env(server.create_bucket("bench"))
        bucket = storage.for_config(storage_url.parse(
            env["MAILGATE_STORAGE_URL"], files_dir=Path("."), endpoint_url=env["MAILGATE_S3_ENDPOINT_URL"],
            region=env["MAILGATE_S3_REGION"], access_key=env["MAILGATE_S3_ACCESS_KEY_ID"],
            secret_key=env["MAILGATE_S3_SECRET_ACCESS_KEY"]))
        storage.write_many_once(batch(99, 16, 100), bucket)  # warm-up: connections and botocore models
        results = {"local": [], "s3 sequential": [], "s3 parallel": []}
        for round_no in range(args.rounds):
            local = FileSystemStorage(location=tempfile.mkdtemp(prefix="bench-files-", dir=os.environ["MAILGATE_DATA_DIR"]))
            items = batch(round_no * 3, args.messages, args.size)
            results["local"].append(timed(lambda: [storage.write_once(n, d, local) for n, d in items]))
            items = batch(round_no * 3 + 1, args.messages, args.size)
            results["s3 sequential"].append(timed(lambda: [storage.write_once(n, d, bucket) for n, d in items]))
            items = batch(round_no * 3 + 2, args.messages, args.size)
            results["s3 parallel"].append(timed(lambda: storage.write_many_once(items, bucket)))

        big = os.urandom(20 * 1024 * 1024)
        storage.write("attachments/bb/big", big, bucket)
        largest, total = 0, 0
        started = time.perf_counter()
        with storage.open_stream("attachments/bb/big", bucket) as fh:
            while chunk := fh.read(8192):  # a download reads FileResponse.block_size (4 KiB) at a time
                largest, total = max(largest, len(chunk)), total + len(chunk)
        stream_seconds = time.perf_counter() - started

    base = statistics.median(results["local"])
    print(f"{args.messages} messages of {args.size} bytes, median of {args.rounds} rounds (shared machine):")
    for name, seconds in results.items():
        median = statistics.median(seconds)
        print(f"  {name:14} {median * 1000:8.1f} ms  {args.messages / median:8.0f} msg/s  x{median / base:.1f} of local")
    print(f"  s3 parallel vs sequential: {statistics.median(results['s3 sequential']) / statistics.median(results['s3 parallel']):.1f}x faster")
    print(f"streamed a {total // (1024 * 1024)} MB object in {stream_seconds * 1000:.0f} ms, largest chunk held {largest} bytes")


if __name__ == "__main__":
    main()
