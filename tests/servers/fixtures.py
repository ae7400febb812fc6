"""pytest fixtures for the real test servers.

Load with ``pytest_plugins = ["tests.servers.fixtures"]`` in tests/conftest.py.

Servers are session-scoped (each starts once, on first use, and stops at the
end of the run); the ``clean_*`` / ``mail_user`` fixtures are function-scoped
and give each test a clean view of a shared server.
"""

from __future__ import annotations

import itertools

import pytest

from .dovecot import Dovecot, User
from .http import HttpSink
from .redis import RedisServer
from .s3 import S3Server
from .smtp import SmtpSink


@pytest.fixture(scope="session")
def dovecot():
    """A private Dovecot (plain IMAP on .port, IMAPS on .tls_port)."""
    server = Dovecot.start()
    try:
        yield server
    finally:
        server.stop()


_user_numbers = itertools.count(1)


@pytest.fixture
def mail_user(dovecot) -> User:
    """A fresh IMAP account, unique to this test (users are never reused
    across tests because the Dovecot is shared by the whole session)."""
    n = next(_user_numbers)
    return dovecot.add_user(f"user{n}", f"pw-{n}-secret")


@pytest.fixture(scope="session")
def smtp_sink():
    """Recording SMTP server without auth/TLS. Use clean_smtp_sink in tests."""
    sink = SmtpSink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def clean_smtp_sink(smtp_sink):
    """The shared SMTP sink, emptied before and after the test."""
    smtp_sink.clear()
    yield smtp_sink
    smtp_sink.clear()


@pytest.fixture(scope="session")
def redis_server():
    """A private redis-server; .url is redis://127.0.0.1:PORT/0."""
    server = RedisServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clean_redis(redis_server):
    """The shared Redis, FLUSHALLed before the test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server


@pytest.fixture(scope="session")
def http_sink():
    """Scriptable HTTP server for webhook/API targets."""
    sink = HttpSink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def clean_http_sink(http_sink):
    """The shared HTTP sink with no recorded requests and no scripts."""
    http_sink.clear()
    yield http_sink
    http_sink.clear()


@pytest.fixture(scope="session")
def s3_server():
    """A private S3-compatible server (moto); .endpoint_url, .create_bucket(), .env(bucket)."""
    server = S3Server.start()
    try:
        yield server
    finally:
        server.stop()


_bucket_numbers = itertools.count(1)


@pytest.fixture
def s3_storage(s3_server, settings):
    """A fresh bucket on the private S3 server as this test's default storage, configured exactly
    as MAILGATE_STORAGE_URL and the MAILGATE_S3_* variables would; returns the server's env()."""
    from mailgate import storage_url

    env = s3_server.env(s3_server.create_bucket(f"mail-{next(_bucket_numbers)}"))
    config = storage_url.parse(
        env["MAILGATE_STORAGE_URL"], files_dir=settings.MEDIA_ROOT, endpoint_url=env["MAILGATE_S3_ENDPOINT_URL"],
        region=env["MAILGATE_S3_REGION"], access_key=env["MAILGATE_S3_ACCESS_KEY_ID"],
        secret_key=env["MAILGATE_S3_SECRET_ACCESS_KEY"])
    settings.MAILGATE_STORAGE = config
    settings.STORAGES = {**settings.STORAGES, "default": storage_url.backend(config)}
    return env
