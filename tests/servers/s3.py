"""A private S3-compatible server for tests: moto's standalone server (Werkzeug, in memory) on a
free loopback port, started as a child and stopped by PID.

    with S3Server.start() as s3:
        s3.create_bucket("mail")   # then s3://mail/PREFIX with s3.env()

It dies with the test process even on SIGKILL (PR_SET_PDEATHSIG) and at interpreter exit (atexit),
so it stops by itself when the run ends.
"""

from __future__ import annotations

import os
import sys
import tempfile
import urllib.error
import urllib.request

from .ports import HOST, free_port
from .procs import ChildServer

ACCESS_KEY = "mailgate-test-access"
SECRET_KEY = "mailgate-test-secret-key"
REGION = "us-east-1"


class S3Server(ChildServer):
    host = HOST

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://{self.host}:{self.port}"
        self.dir = tempfile.mkdtemp(prefix="mailgate-s3-")
        self.log_path = os.path.join(self.dir, "moto.log")
        self.log_paths = (self.log_path,)
        self._client = None

    @classmethod
    def start(cls, timeout: float = 30.0) -> "S3Server":
        self = cls()
        with self._stopped_on_failure():
            self._launch(timeout)
        return self

    def _launch(self, timeout: float) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self._spawn([sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)], self.log_path,
                    env=env, cwd=self.dir)
        self._wait_until(self._answers, timeout, "moto server", f"on {self.endpoint_url}", delay=0.01, max_delay=0.1)

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

    def __repr__(self) -> str:
        return f"<S3Server {self.endpoint_url} pid={self.pid}>"
