"""Settings and start-up: embedded defaults that run, production by environment, one-line errors.

Start-up is tested as it happens: a fresh `manage.py` process with a given environment.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.test import override_settings

from mailgate import checks
from mailgate.env import EnvError, env_bool, env_float, env_int, env_list, env_secret
from tests.servers.procs import ROOT

# Variables that would leak the test process's configuration into the child.
CLEARED = {"DJANGO_SETTINGS_MODULE", "DEBUG", "SECRET_KEY", "SECRET_KEY_FILE", "MAILGATE_FERNET_KEYS",
           "MAILGATE_FERNET_KEYS_FILE", "DATABASE_URL", "REDIS_URL", "MAILGATE_CHANNEL_LAYER", "ALLOWED_HOSTS",
           "MAILGATE_USE_TEST_DB", "MAILGATE_DATA_DIR", "MAILGATE_ALLOW_PRIVATE_TARGETS"}


def fernet_key() -> str:
    return Fernet.generate_key().decode()


def production_env(**extra) -> dict:
    return {"DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(60), "MAILGATE_FERNET_KEYS": fernet_key(),
            "ALLOWED_HOSTS": "mail.example.com", **extra}


def manage(tmp_path, *args, **env) -> subprocess.CompletedProcess:
    child_env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    child_env.update(MAILGATE_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=child_env, capture_output=True,
                          text=True, timeout=60)


def assert_one_line_startup_error(result, expected: str):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [expected]


# ---------------------------------------------------------------- laptop defaults


def test_a_laptop_install_generates_each_secret_once_privately_and_warns(tmp_path):
    first = manage(tmp_path, "check")
    assert first.returncode == 0, first.stderr
    data = tmp_path / "data"
    for name in ("secret.key", "fernet.key"):
        assert f"mailgate WARNING: generated {data / name}" in first.stderr
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
    fernet = (data / "fernet.key").read_text()
    Fernet(fernet.strip().encode())  # a real key

    second = manage(tmp_path, "check")
    assert second.returncode == 0
    assert "WARNING" not in second.stderr  # reused, not regenerated
    assert (data / "fernet.key").read_text() == fernet


def test_the_data_dir_and_the_mail_stored_in_it_are_readable_by_this_user_only(tmp_path):
    files = tmp_path / "elsewhere" / "files"  # MAILGATE_FILES_DIR outside the data dir, too
    result = manage(tmp_path, "shell", "-c",
                    "from django.core.files.base import ContentFile\n"
                    "from django.core.files.storage import default_storage\n"
                    "from pipeline.ingest import store_raw\n"
                    "print(default_storage.path(store_raw(b'Subject: hi\\r\\n\\r\\nbody')[0]))\n"
                    "saved = default_storage.save('attachments/x/report.pdf', ContentFile(b'%PDF'))\n"
                    "print(default_storage.path(saved))",
                    MAILGATE_FILES_DIR=str(files))
    assert result.returncode == 0, result.stderr
    raw, attachment = result.stdout.splitlines()[-2:]
    mode = lambda path: stat.S_IMODE(os.stat(path).st_mode)  # noqa: E731
    assert (mode(tmp_path / "data"), mode(files)) == (0o700, 0o700)
    assert (mode(raw), mode(attachment)) == (0o600, 0o600)
    assert raw.startswith(str(files)) and attachment.startswith(str(files))


def test_the_default_database_is_sqlite_in_wal_mode_in_the_data_dir(tmp_path):
    result = manage(tmp_path, "shell", "-c",
                    "from django.db import connection\n"
                    "c = connection.cursor(); c.execute('PRAGMA journal_mode'); print(c.fetchone()[0])\n"
                    "c.execute('PRAGMA busy_timeout'); print(c.fetchone()[0])\n"
                    "print(connection.settings_dict['NAME'])")
    assert result.returncode == 0, result.stderr
    mode, busy_ms, name = result.stdout.splitlines()[-3:]  # after shell's "N objects imported"
    assert mode == "wal" and int(busy_ms) >= 5000
    assert name == str(tmp_path / "data" / "mailgate.sqlite3")


# ---------------------------------------------------------------- production: one-line errors


def test_production_without_fernet_keys_stops_with_one_line(tmp_path):
    env = production_env()
    del env["MAILGATE_FERNET_KEYS"]
    result = manage(tmp_path, "check", **env)
    assert result.stderr.startswith("mailgate: MAILGATE_FERNET_KEYS is not set (ALLOWED_HOSTS names mail.example.com); "
                                    "generate one with")
    assert_one_line_startup_error(result, result.stderr.strip())
    assert not (tmp_path / "data" / "fernet.key").exists()  # never generated in production


@pytest.mark.parametrize("keys, position", [("not-a-key", 1), (f"{Fernet.generate_key().decode()},short", 2)])
def test_a_malformed_fernet_key_stops_start_up_naming_the_entry(tmp_path, keys, position):
    result = manage(tmp_path, "check", **production_env(MAILGATE_FERNET_KEYS=keys))
    assert_one_line_startup_error(
        result, f"mailgate: MAILGATE_FERNET_KEYS entry {position} is not a Fernet key (44 url-safe base64 characters)")


def test_production_without_a_secret_key_stops_with_one_line(tmp_path):
    env = production_env()
    del env["SECRET_KEY"]
    assert_one_line_startup_error(
        manage(tmp_path, "check", **env),
        "mailgate: SECRET_KEY is not set (or SECRET_KEY_FILE); it must be set because ALLOWED_HOSTS names mail.example.com")
    assert_one_line_startup_error(manage(tmp_path, "check", **production_env(SECRET_KEY="short")),
                                  "mailgate: SECRET_KEY is shorter than 50 characters; use a long random value")


def test_debug_is_off_unless_asked_for_and_a_laptop_still_starts_on_generated_keys(tmp_path):
    result = manage(tmp_path, "shell", "-c", "from django.conf import settings\n"
                    "print(settings.DEBUG, settings.SECURE_SSL_REDIRECT, settings.SESSION_COOKIE_SECURE)")
    assert result.returncode == 0, result.stderr
    # Loopback only: no HTTPS redirect or secure cookies, or http://127.0.0.1:8000 would not work.
    assert result.stdout.splitlines()[-1] == "False False False"
    assert (tmp_path / "data" / "secret.key").exists()


@pytest.mark.parametrize("env, reason", [
    ({"DEBUG": "1", "ALLOWED_HOSTS": "mail.example.com"}, "ALLOWED_HOSTS names mail.example.com"),
    ({"DATABASE_URL": "postgres://mailgate:pw@127.0.0.1:1/mailgate"}, "DATABASE_URL is set"),
])
def test_an_install_that_is_not_loopback_only_refuses_generated_keys(tmp_path, env, reason):
    assert_one_line_startup_error(
        manage(tmp_path, "check", **env),
        f"mailgate: SECRET_KEY is not set (or SECRET_KEY_FILE); it must be set because {reason}")
    assert not (tmp_path / "data" / "secret.key").exists()
    result = manage(tmp_path, "check", **env, SECRET_KEY=secrets.token_urlsafe(60))
    assert result.stderr.startswith(f"mailgate: MAILGATE_FERNET_KEYS is not set ({reason}); generate one with")
    assert not (tmp_path / "data" / "fernet.key").exists()


@pytest.mark.django_db
def test_a_debug_page_for_a_bad_host_shows_no_connection_password(client):
    with override_settings(DEBUG=True, DATABASE_URL="postgres://mailgate:topsecret@db.internal/mailgate",
                           REDIS_URL="redis://:redispw@redis.internal:6379/0",
                           MAILGATE_REDIS_ADDRESS="redis://:redispw@redis.internal:6379/0",
                           CHANNEL_LAYERS={"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                                       "CONFIG": {"hosts": [{"address": "redis://:layerpw@r/0"}]}}}):
        response = client.get("/accounts/login/", HTTP_HOST="attacker.invalid")
        assert response.status_code == 400
        body = response.content.decode()
        assert "DisallowedHost" in body  # it is the technical page, settings dump included
        for password in ("topsecret", "redispw", "layerpw"):
            assert password not in body


def test_a_malformed_variable_stops_start_up_with_one_line(tmp_path):
    assert_one_line_startup_error(
        manage(tmp_path, "check", **production_env(MAILGATE_WORKERS="two")),
        "mailgate: MAILGATE_WORKERS='two' is not an integer")


def test_secrets_can_come_from_files(tmp_path):
    (tmp_path / "secret").write_text(secrets.token_urlsafe(60) + "\n")
    (tmp_path / "keys").write_text(fernet_key() + "\n")
    env = production_env(SECRET_KEY_FILE=str(tmp_path / "secret"), MAILGATE_FERNET_KEYS_FILE=str(tmp_path / "keys"))
    del env["SECRET_KEY"], env["MAILGATE_FERNET_KEYS"]
    result = manage(tmp_path, "check", **env)
    assert result.returncode == 0, result.stderr
    missing = manage(tmp_path, "check", **{**env, "SECRET_KEY_FILE": str(tmp_path / "nope")})
    assert_one_line_startup_error(
        missing, f"mailgate: SECRET_KEY_FILE='{tmp_path / 'nope'}' cannot be read: No such file or directory")


def test_check_deploy_is_clean_with_the_production_variables(tmp_path):
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_fails_when_the_queue_could_retry_a_task_while_it_still_runs(tmp_path):
    result = manage(tmp_path, "check", MAILGATE_TASK_TIMEOUT="300", MAILGATE_TASK_RETRY="200")
    assert result.returncode == 1
    assert "mailgate.E003" in result.stderr and "must be greater than 'timeout' (300)" in result.stderr


# ---------------------------------------------------------------- the system check, in-process


def check_ids(**q_overrides) -> set[str]:
    from django.conf import settings

    with override_settings(Q_CLUSTER={**settings.Q_CLUSTER, **q_overrides}):
        return {error.id for error in checks.check_task_queue()}


def test_the_shipped_queue_settings_pass_the_check():
    assert check_ids() == set()


def test_the_queue_check_names_each_way_work_could_be_lost_or_loop():
    assert check_ids(orm=None) == {"mailgate.E001"}
    assert check_ids(timeout=0) == {"mailgate.E002"}
    assert check_ids(timeout=300, retry=300) == {"mailgate.E003"}
    assert check_ids(max_attempts=0) == {"mailgate.E004"}


def test_the_idle_renewal_is_refused_past_29_minutes(settings):
    settings.MAILGATE_IDLE_RENEW = 1741
    assert {e.id for e in checks.check_task_queue()} == {"mailgate.E005"}


def test_the_stage_deadline_must_outlast_the_task_timeout(settings):
    assert checks.check_stage_deadline() == []
    for deadline, timeout in ((600, 900), (300, 300)):
        settings.MAILGATE_STAGE_DEADLINE = deadline
        settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": timeout}
        [error] = checks.check_stage_deadline()
        assert error.id == "mailgate.E007"
        assert error.msg == (f"MAILGATE_STAGE_DEADLINE ({deadline}) must be greater than "
                             f"MAILGATE_TASK_TIMEOUT ({timeout}).")


def test_a_send_batch_must_stop_starting_sends_before_the_task_timeout(settings):
    settings.MAILGATE_SEND_BATCH_SECONDS = settings.Q_CLUSTER["timeout"]
    [error] = checks.check_stage_deadline()
    assert error.id == "mailgate.E010"
    assert error.msg.startswith("MAILGATE_SEND_BATCH_SECONDS (300) must be less than MAILGATE_TASK_TIMEOUT")


def test_a_task_timeout_past_the_stage_deadline_stops_start_up(tmp_path):
    result = manage(tmp_path, "check", MAILGATE_TASK_TIMEOUT="900", MAILGATE_TASK_RETRY="960")
    assert result.returncode == 1
    assert "mailgate.E007" in result.stderr


def test_the_webhook_media_budget_must_fit_inside_twilios_15_seconds(settings):
    for seconds, expected in ((0, {"mailgate.E006"}), (15, {"mailgate.E006"}), (10, set()), (1, set())):
        settings.MAILGATE_WEBHOOK_MEDIA_SECONDS = seconds
        assert {e.id for e in checks.check_webhook_media_budget()} == expected


# ---------------------------------------------------------------- env helpers


def test_env_helpers_read_typed_values_with_defaults(monkeypatch):
    monkeypatch.setenv("MG_FLAG", "yes")
    monkeypatch.setenv("MG_COUNT", "7")
    monkeypatch.setenv("MG_RATIO", "0.5")
    monkeypatch.setenv("MG_HOSTS", " a.example , b.example,,")
    monkeypatch.delenv("MG_UNSET", raising=False)
    assert env_bool("MG_FLAG") is True and env_bool("MG_UNSET", True) is True
    assert env_int("MG_COUNT", 1) == 7 and env_int("MG_UNSET", 3) == 3
    assert env_float("MG_RATIO", 1.0) == 0.5
    assert env_list("MG_HOSTS") == ["a.example", "b.example"] and env_list("MG_UNSET", ("x",)) == ["x"]


def test_env_helpers_name_the_variable_they_cannot_use(monkeypatch):
    monkeypatch.setenv("MG_FLAG", "maybe")
    with pytest.raises(EnvError, match="MG_FLAG='maybe' is not a boolean"):
        env_bool("MG_FLAG")
    monkeypatch.setenv("MG_COUNT", "7.5")
    with pytest.raises(EnvError, match="MG_COUNT='7.5' is not an integer"):
        env_int("MG_COUNT", 1)


def test_a_secret_comes_from_the_variable_or_the_file_it_names(monkeypatch, tmp_path):
    (tmp_path / "token").write_text("from-file\n")
    monkeypatch.delenv("MG_TOKEN", raising=False)
    monkeypatch.setenv("MG_TOKEN_FILE", str(tmp_path / "token"))
    assert env_secret("MG_TOKEN") == "from-file"
    monkeypatch.setenv("MG_TOKEN", "direct")
    assert env_secret("MG_TOKEN") == "direct"  # the variable wins over the file
