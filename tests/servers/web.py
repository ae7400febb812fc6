"""A real web server (daphne, HTTP + websockets) on the test database, for browser and live tests.

    @pytest.mark.django_db(transaction=True)
    def test_something(live_web):
        live_web.url                # "http://127.0.0.1:PORT"
        live_web.get("/healthz")    # (status, body bytes) over real HTTP, no browser needed

Fixtures (registered for every test by tests/conftest.py's ``pytest_plugins``):

* ``web_server`` (session): daphne started once as a subprocess (tests/servers/procs.py) with
  REDIS_URL pointing at the ``redis_server`` fixture, so websocket events cross processes. It
  opens the same test database and data dir (keys, raw files) as the test process.
* ``start_web(**env)`` (function): a factory that starts a private daphne with extra environment
  variables (e.g. ``MAILGATE_IMAP_CAFILE=dovecot.cafile``) and returns its WebServer; stopped at
  the end of the test. Use it when the server needs settings the shared one lacks.
* ``live_web`` (function): the running server for one test. Needs a transactional test
  (``@pytest.mark.django_db(transaction=True)``) because daphne reads the test's rows from another
  process. It also points this process's CHANNEL_LAYERS at the same Redis, so
  ``mailgate.realtime.publish()`` called in the test reaches the browser (call it through
  ``off_the_event_loop`` while a browser runs: see browser.py).

Browser side: tests/servers/browser.py (``browser`` and ``page`` fixtures, function-scoped;
``login(page, user)`` or ``login(page, server, username, password)``, ``screenshot_path(request,
suffix)`` and ``off_the_event_loop(fn, *args)``, the last three importable from here too).

Servers are stopped by PID when the session ends (and is in its own process group).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

import pytest
from django.conf import settings

from tests.servers import procs
from tests.servers.ports import HOST, free_port


@dataclass
class WebServer:
    url: str
    port: int
    redis_url: str
    channel_prefix: str
    proc: object
    log_name: str = "web"

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        """A plain GET over real HTTP; returns (status, body) for any status code."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def log(self) -> str:
        return procs.log_text(self.log_name)

    @property
    def redis_address(self) -> str:
        """Where the server's channel layer lives: its REDIS_URL, or without one the embedded Redis
        in the data dir it shares with the tests."""
        return self.redis_url or f"unix://{settings.MAILGATE_EMBEDDED_REDIS_SOCKET}"

    def channel_layers(self) -> dict:
        """The CHANNEL_LAYERS setting that talks to the same Redis as the server."""
        return {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [{"address": self.redis_address, **settings.MAILGATE_REDIS_CONNECTION}],
                           "prefix": self.channel_prefix,
                           "capacity": 1000, "expiry": 30},
            }
        }


def _wait_until_answering(server: WebServer, timeout: float = 30) -> None:
    """/healthz answering at all (503 too: no IDLE manager runs in tests) means Django is up."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"daphne exited ({server.proc.returncode}):\n{server.log()[-4000:]}")
        try:
            server.get("/healthz", timeout=5)
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"daphne did not answer /healthz within {timeout}s:\n{server.log()[-4000:]}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def start_daphne(redis_url: str, log_name: str = "web", port: int | None = None, **env: str) -> WebServer:
    """Start daphne on a free port over the test database and wait until it answers.

    With `redis_url` empty the server uses the embedded Redis of the test data dir (starting it
    if need be), as a laptop install does."""
    port = port or free_port()  # given when the server must know its own URL (MAILGATE_PUBLIC_BASE_URL)
    prefix = f"mailgate-test-{uuid.uuid4().hex[:8]}"
    proc = procs.start(
        ["-m", "daphne", "-b", HOST, "-p", str(port), "mailgate.asgi:application"], log_name,
        REDIS_URL=redis_url,
        # tests/settings.py put MAILGATE_CHANNEL_LAYER=memory into our environment; the child
        # must use Redis, and must keep Django's async-safety checks on.
        MAILGATE_CHANNEL_LAYER="",
        MAILGATE_CHANNEL_PREFIX=prefix,
        DJANGO_ALLOW_ASYNC_UNSAFE="",
        **env,
    )
    server = WebServer(url=f"http://{HOST}:{port}", port=port, redis_url=redis_url,
                       channel_prefix=prefix, proc=proc, log_name=log_name)
    try:
        _wait_until_answering(server)
    except BaseException:
        procs.stop(proc)
        raise
    return server


@pytest.fixture(scope="session")
def web_server(django_db_setup, redis_server):
    """daphne on a free port over the test database; see the module docstring."""
    server = start_daphne(redis_server.url)
    try:
        yield server
    finally:
        procs.stop(server.proc)


def _use_server_from_this_process(server: WebServer, settings) -> None:
    settings.CHANNEL_LAYERS = server.channel_layers()  # channels resets its cached layer on change


@pytest.fixture
def start_web(transactional_db, redis_server, settings):
    """Factory: ``server = start_web(NAME="value", ...)`` starts a private daphne with that env
    (``port=`` picks its port, for a server that must know its own URL)."""
    started: list[WebServer] = []

    def start(port: int | None = None, **env: str) -> WebServer:
        # A log of its own: log files are opened for appending, and a name reused by an earlier
        # test would show that test's tracebacks as this server's.
        server = start_daphne(redis_server.url, log_name=f"web-private-{uuid.uuid4().hex[:12]}", port=port, **env)
        started.append(server)
        _use_server_from_this_process(server, settings)
        return server

    yield start
    for server in started:
        procs.stop(server.proc)


@pytest.fixture
def live_web(web_server, transactional_db, settings):
    """The session's daphne, with this process publishing to the same Redis."""
    _use_server_from_this_process(web_server, settings)
    if web_server.proc.poll() is not None:
        pytest.fail(f"daphne died:\n{web_server.log()[-4000:]}")
    yield web_server


# Browser helpers live in browser.py (registered as a plugin by tests/conftest.py). These
# forwarders let tests import them from here too without importing browser.py before pytest's
# assertion rewriting sees it.
def login(*args, **kwargs):
    from tests.servers.browser import login as browser_login

    return browser_login(*args, **kwargs)


def screenshot_path(*args, **kwargs):
    from tests.servers.browser import screenshot_path as browser_screenshot_path

    return browser_screenshot_path(*args, **kwargs)


def off_the_event_loop(*args, **kwargs):
    from tests.servers.browser import off_the_event_loop as browser_off_the_event_loop

    return browser_off_the_event_loop(*args, **kwargs)
