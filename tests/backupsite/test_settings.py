"""Settings come from the environment with safe defaults; each case runs a fresh interpreter."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, django
from django.conf import settings
django.setup()
print(json.dumps({
  "engine": settings.DATABASES["default"]["ENGINE"],
  "db": str(settings.DATABASES["default"]["NAME"]),
  "host": settings.DATABASES["default"].get("HOST"),
  "user": settings.DATABASES["default"].get("USER"),
  "debug": settings.DEBUG,
  "secret": settings._wrapped.SECRET_KEY,  # the raw value: Django refuses to hand out an empty one
  "credkey": settings.CREDENTIALS_KEY,
  "broker": "redis" if "redis" in settings.Q_CLUSTER else ("orm" if "orm" in settings.Q_CLUSTER else "?"),
}))
"""


def probe(data_dir: Path, **env: str) -> dict:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "CREDENTIALS_KEY", "DEBUG", "DATA_DIR"}
    }
    clean.update({"DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "backupsite.settings", **env})
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_it_defaults_to_sqlite_orm_broker_and_no_debug(tmp_path):
    result = probe(tmp_path)
    assert result["engine"] == "django.db.backends.sqlite3"
    assert result["db"] == str(tmp_path / "db.sqlite3")
    assert result["debug"] is False
    assert result["broker"] == "orm"


def init_secrets(data_dir: Path) -> subprocess.CompletedProcess:
    return run_manage(data_dir, "init_secrets")


def run_manage(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "CREDENTIALS_KEY", "DATABASE_URL"}}
    clean.update({"DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "backupsite.settings", **env})
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def test_it_creates_nothing_when_the_settings_are_read(tmp_path):
    result = probe(tmp_path)
    assert (result["secret"], result["credkey"]) == ("", "")
    assert list(tmp_path.iterdir()) == []


def test_it_generates_the_keys_once_into_private_files_at_first_start(tmp_path):
    assert init_secrets(tmp_path).returncode == 0
    first = probe(tmp_path)
    for name, value in (("secret_key", first["secret"]), ("credentials.key", first["credkey"])):
        assert (tmp_path / name).read_text().strip() == value
        assert oct((tmp_path / name).stat().st_mode & 0o777) == "0o600"
    assert len(first["secret"]) >= 50
    again = init_secrets(tmp_path)
    assert again.returncode == 0 and again.stdout == ""
    assert probe(tmp_path) == first
    # Another installation gets other keys: nothing is hard-coded.
    init_secrets(tmp_path / "other")
    other = probe(tmp_path / "other")
    assert (other["secret"], other["credkey"]) != (first["secret"], first["credkey"])


def test_it_stops_with_a_clear_message_when_a_key_is_missing(tmp_path):
    out = run_manage(tmp_path, "migrate", "--noinput")
    assert out.returncode != 0
    assert f"SECRET_KEY is not set and {tmp_path / 'secret_key'} does not exist" in out.stderr
    assert "manage.py init_secrets" in out.stderr
    web = subprocess.run(
        [sys.executable, "-c", "import backupsite.wsgi"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "CREDENTIALS_KEY"}}
        | {"DATA_DIR": str(tmp_path), "SECRET_KEY": "x" * 60},
        capture_output=True,
        text=True,
    )
    assert web.returncode != 0
    assert f"CREDENTIALS_KEY is not set and {tmp_path / 'credentials.key'} does not exist" in web.stderr
    assert not tmp_path.joinpath("secret_key").exists()


def test_it_prefers_keys_from_the_environment(tmp_path):
    result = probe(tmp_path, SECRET_KEY="x" * 60)
    assert result["secret"] == "x" * 60
    assert run_manage(tmp_path / "site", "init_secrets", SECRET_KEY="x" * 60).returncode == 0
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == ["credentials.key", "db.sqlite3"]


def test_it_uses_postgresql_when_database_url_is_set(tmp_path):
    result = probe(tmp_path, DATABASE_URL="postgres://backup:s%40cret@db.example:5433/backups")
    assert result["engine"] == "django.db.backends.postgresql"
    assert (result["db"], result["host"], result["user"]) == ("backups", "db.example", "backup")


def test_it_uses_redis_broker_when_redis_url_is_set(tmp_path):
    assert probe(tmp_path, REDIS_URL="redis://127.0.0.1:6379/0")["broker"] == "redis"


def test_it_turns_debug_on_only_when_asked(tmp_path):
    assert probe(tmp_path, DEBUG="true")["debug"] is True
    assert probe(tmp_path, DEBUG="0")["debug"] is False


def test_it_refuses_a_malformed_boolean(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    env.update(DATA_DIR=str(tmp_path), DEBUG="maybe", DJANGO_SETTINGS_MODULE="backupsite.settings")
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in out.stderr


WRITERS = """
import os, threading, django
django.setup()
from django.db import connection, transaction
from jobs.models import Job

errors = []

def writer(n):
    try:
        for i in range(15):
            with transaction.atomic():
                # Read, then write in the same transaction: the pattern of a job claim and its log.
                Job.objects.filter(kind="sync").count()
                job = Job.objects.create(kind="sync", name=f"w{n}-{i}")
                job.log("info", "written")
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
    finally:
        connection.close()

threads = [threading.Thread(target=writer, args=(n,)) for n in range(20)]
for t in threads: t.start()
for t in threads: t.join()
print("errors:", len(errors), errors[:1])
print("jobs:", Job.objects.count())
"""


def test_it_lets_20_concurrent_writers_share_the_embedded_sqlite(tmp_path):
    assert init_secrets(tmp_path).returncode == 0
    assert run_manage(tmp_path, "migrate", "--noinput", "-v0").returncode == 0
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SECRET_KEY", "CREDENTIALS_KEY"}}
    env |= {"DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "backupsite.settings"}
    out = subprocess.run(
        [sys.executable, "-c", WRITERS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "errors: 0 []" in out.stdout and "jobs: 300" in out.stdout, out.stdout
    for private in ("db.sqlite3", "secret_key", "credentials.key"):
        assert oct((tmp_path / private).stat().st_mode & 0o777) == "0o600", private


PRODUCTION = {
    "DEBUG": "false",
    "ALLOWED_HOSTS": "backup.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://backup.example.com",
    "BEHIND_PROXY": "true",
    "SECURE_COOKIES": "true",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
}


def test_it_passes_the_deployment_checks_with_the_production_settings(tmp_path, monkeypatch):
    from cryptography.fernet import Fernet

    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE", raising=False)  # the test run's own, not production's
    keys = {"SECRET_KEY": secrets.token_urlsafe(50), "CREDENTIALS_KEY": Fernet.generate_key().decode()}
    out = run_manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **keys, **PRODUCTION)
    assert out.returncode == 0, out.stderr
    assert "System check identified no issues" in out.stdout
    # Without them the same check names what is missing.
    out = run_manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **keys)
    assert out.returncode != 0
    for missing in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert missing in out.stderr


def test_it_refuses_to_start_with_token_days_out_of_range(tmp_path):
    from cryptography.fernet import Fernet

    keys = {"SECRET_KEY": secrets.token_urlsafe(50), "CREDENTIALS_KEY": Fernet.generate_key().decode()}
    out = run_manage(tmp_path, "check", API_TOKEN_DAYS="5000", **keys)
    assert out.returncode != 0
    assert "API_TOKEN_DAYS is 5000: it must be 1 to 3650 days, or 0 for tokens that do not expire." in out.stderr


def test_it_refuses_a_node_lost_after_shorter_than_three_heartbeats(tmp_path):
    from cryptography.fernet import Fernet

    keys = {"SECRET_KEY": secrets.token_urlsafe(50), "CREDENTIALS_KEY": Fernet.generate_key().decode()}
    out = run_manage(tmp_path, "check", NODE_HEARTBEAT="10", NODE_LOST_AFTER="20", **keys)
    assert out.returncode != 0
    assert (
        "NODE_LOST_AFTER is 20: it must be at least three heartbeats (3 x NODE_HEARTBEAT = 30 seconds)." in out.stderr
    )
    assert run_manage(tmp_path, "check", NODE_HEARTBEAT="10", NODE_LOST_AFTER="30", **keys).returncode == 0
