"""A private S3-compatible server for tests: moto's standalone server (Werkzeug, in memory) on a
free loopback port, started as a child and stopped by PID.

    with S3Server.start() as s3:
        s3.create_bucket("mail")   # then s3://mail/PREFIX with s3.env()

It dies with the test process even on SIGKILL (PR_SET_PDEATHSIG) and at interpreter exit (atexit),
so it stops by itself when the run ends.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from .ports import HOST, free_port, set_parent_death_signal

ACCESS_KEY = "mailgate-test-access"
SECRET_KEY = "mailgate-test-secret-key"
REGION = "us-east-1"

_live: set["S3Server"] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all_at_exit() -> None:
    with _live_lock:
        instances = list(_live)
    for instance in instances:
        try:
            instance.stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


class S3Server:
    host = HOST

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://{self.host}:{self.port}"
        self.dir = tempfile.mkdtemp(prefix="mailgate-s3-")
        self.log_path = os.path.join(self.dir, "moto.log")
        self._proc: subprocess.Popen | None = None
        self._client = None

    @classmethod
    def start(cls, timeout: float = 30.0) -> "S3Server":
        self = cls()
        try:
            self._launch(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, timeout: float) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.dir,
                start_new_session=True, preexec_fn=set_parent_death_signal, close_fds=True,
            )
        with _live_lock:
            _live.add(self)
        deadline = time.monotonic() + timeout
        delay = 0.01
        while not self._answers():
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited ({self._proc.returncode}):\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"moto server did not answer on {self.endpoint_url}:\n{self.log_text()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer: it is serving
        except OSError:
            return False

    def client(self):
        """A boto3 client for the tests' own calls (made once: loading botocore's models takes ~1 s)."""
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        return self._client

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, bucket: str, prefix: str = "mail") -> dict:
        """The MAILGATE_* variables of an install that stores in `bucket`."""
        return {"MAILGATE_STORAGE_URL": f"s3://{bucket}/{prefix}", "MAILGATE_S3_ENDPOINT_URL": self.endpoint_url,
                "MAILGATE_S3_REGION": REGION, "MAILGATE_S3_ACCESS_KEY_ID": ACCESS_KEY,
                "MAILGATE_S3_SECRET_ACCESS_KEY": SECRET_KEY}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with _live_lock:
            _live.discard(self)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def __enter__(self) -> "S3Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<S3Server {self.endpoint_url} pid={self.pid}>"
