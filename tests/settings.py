"""Test settings: the real settings module, pointed at a private data dir.

Set before importing mailgate.settings because it reads the environment at import time.
"""

import base64
import os
import secrets
import tempfile

os.environ.setdefault("MAILGATE_DATA_DIR", tempfile.mkdtemp(prefix="mailgate-test-"))
os.environ.setdefault("DEBUG", "1")
# The run's own throwaway keys, in the environment so the daphne, worker and IDLE subprocesses it
# starts share them. Not generated into the data dir: with DATABASE_URL set (CI's PostgreSQL pass)
# the install is not loopback-only and start-up rightly refuses generated keys.
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(60))
os.environ.setdefault("MAILGATE_FERNET_KEYS", base64.urlsafe_b64encode(os.urandom(32)).decode())
# The test servers listen on loopback, which mailgate refuses to connect to by default; in the
# environment, so the worker and daphne subprocesses allow it too. Tests of the refusal turn it off.
os.environ.setdefault("MAILGATE_ALLOW_PRIVATE_TARGETS", "1")
# Unit tests use the in-memory layer unless a real Redis is given (CI's second pass sets
# REDIS_URL); acceptance tests that cross processes start their own Redis.
if not os.environ.get("REDIS_URL"):
    os.environ.setdefault("MAILGATE_CHANNEL_LAYER", "memory")

from mailgate.settings import *  # noqa: E402,F401,F403
from mailgate.settings import DATA_DIR, DATABASES  # noqa: E402

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not :memory:, so worker and IDLE subprocesses started by tests share it. A child
    # that plays another host, with a data dir of its own, is told the file (test_storage_hosts.py).
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("MAILGATE_TEST_DB_NAME") or str(DATA_DIR / "test.sqlite3")}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast user creation
Q_CLUSTER = {**Q_CLUSTER, "sync": False}  # noqa: F405
# Stages take the messages they are given, not others waiting (tests/test_lanes.py turns it on).
MAILGATE_STAGE_COMPANIONS = env_bool("MAILGATE_STAGE_COMPANIONS", False)  # noqa: F405
# A stage queues the next one for a message alone, so tests can run each stage on its own (the
# hand-on is tested with it turned on: tests/test_batches.py).
MAILGATE_HAND_ON_ALONE = env_bool("MAILGATE_HAND_ON_ALONE", False)  # noqa: F405

# Subprocesses started by tests (daphne, qcluster, IDLE managers) get MAILGATE_USE_TEST_DB=1 from
# tests/servers/procs.py so they open the database the test itself uses.
if os.environ.get("MAILGATE_USE_TEST_DB") == "1":
    default = DATABASES["default"]
    if default["ENGINE"].endswith("sqlite3"):
        default["NAME"] = default["TEST"]["NAME"]
    else:
        default["NAME"] = "test_" + default["NAME"]
