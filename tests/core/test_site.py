"""Joining a site: a node whose keys or code are not the site's refuses to start, saying which.

The real-process cases build a site of their own, as two machines would share one: the first node's
DATA_DIR holds its keys, both nodes use one database (a SQLite file named by DATABASE_URL, so the
cases run without PostgreSQL too), and each node has a DATA_DIR of its own."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

import core.version
from core.models import KeyCheck, SiteSshKey, SiteVersion
from core.site import NodeRefused, check_node_can_join, record_key_checks, record_site_version

ROOT = Path(__file__).resolve().parents[2]
SITE_ENV = {"SECRET_KEY", "CREDENTIALS_KEY", "DATABASE_URL", "REDIS_URL", "DATA_DIR", "NODE_NAME", "WORKERS"}
# A node running other code: the version is changed in the node's own process before Django starts
# (core.site reads core.version.VERSION when it checks), so nothing in the service reads a test hook.
OTHER_VERSION_WORKER = """
import django, core.version
core.version.VERSION = "0.0.1-other"
django.setup()
from django.core.management import call_command
call_command("worker")
"""


def node_env(data_dir: Path, database: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SITE_ENV}
    return env | {
        "DJANGO_SETTINGS_MODULE": "backupsite.settings",
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{database}",
        "WORKERS": "1",
        **extra,
    }


def manage(env: dict[str, str], *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The first node, n1: its keys made by init_secrets, the shared database migrated by it."""
    base = tmp_path_factory.mktemp("site")
    database = base / "site.sqlite3"
    first = node_env(base / "n1", database, NODE_NAME="n1")
    for step in (("init_secrets",), ("migrate", "--noinput")):
        done = manage(first, *step, timeout=180)
        assert done.returncode == 0, done.stderr
    return {"base": base, "database": database, "first": base / "n1"}


def second_node(site, **extra: str) -> dict[str, str]:
    return node_env(site["base"] / "n2", site["database"], NODE_NAME="n2", **extra)


def first_keys(site) -> dict[str, str]:
    return {
        "SECRET_KEY": (site["first"] / "secret_key").read_text().strip(),
        "CREDENTIALS_KEY": (site["first"] / "credentials.key").read_text().strip(),
    }


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *(args or ("manage.py", "worker"))],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def refusal_of(worker: subprocess.Popen) -> str:
    try:
        output, _ = worker.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        output, _ = worker.communicate()
        pytest.fail(f"the worker started instead of refusing:\n{output[-3000:]}")
    assert worker.returncode != 0, output
    return output


def test_it_refuses_a_worker_whose_credentials_key_is_not_the_sites(site):
    other_key = Fernet.generate_key().decode()
    env = second_node(site, SECRET_KEY=first_keys(site)["SECRET_KEY"], CREDENTIALS_KEY=other_key)
    output = refusal_of(start_worker(env))
    assert "Node n2 cannot join this site" in output
    assert "CREDENTIALS_KEY is not this site's: it cannot read the credentials stored in the database" in output
    assert "by node n1" in output
    assert "CREDENTIALS_KEY in this node's environment" in output
    assert "SECRET_KEY is not" not in output
    assert "Traceback" not in output


def test_it_refuses_a_worker_whose_secret_key_is_not_the_sites(site):
    env = second_node(site, SECRET_KEY="another-" * 8, CREDENTIALS_KEY=first_keys(site)["CREDENTIALS_KEY"])
    output = refusal_of(start_worker(env))
    assert "SECRET_KEY is not this site's: it cannot read the tasks the other nodes queue" in output
    assert "CREDENTIALS_KEY is not" not in output


def test_it_refuses_a_web_server_whose_key_is_not_the_sites(site):
    env = second_node(site, SECRET_KEY=first_keys(site)["SECRET_KEY"], CREDENTIALS_KEY=Fernet.generate_key().decode())
    web = subprocess.run(
        [sys.executable, "-c", "import backupsite.wsgi"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert web.returncode != 0
    assert "The web server cannot start on this site" in web.stderr
    assert "CREDENTIALS_KEY is not this site's" in web.stderr


def test_it_refuses_a_worker_of_another_version_naming_both(site):
    env = second_node(site, **first_keys(site))
    output = refusal_of(start_worker(env, "-c", OTHER_VERSION_WORKER))
    assert f"This node runs version 0.0.1-other of the code, and the site version {core.version.VERSION}" in output
    assert "migrated" in output and "by node n1" in output


def test_it_makes_no_fresh_key_on_a_machine_joining_a_site(site):
    """What `make worker` runs first on a new machine: it used to make keys that could read nothing."""
    env = second_node(site)
    done = manage(env, "init_secrets")
    assert done.returncode != 0
    assert "This database already belongs to a site" in done.stderr
    assert "by node n1" in done.stderr
    assert f"its DATA_DIR/credentials.key to {site['base'] / 'n2' / 'credentials.key'}" in done.stderr
    assert not (site["base"] / "n2" / "credentials.key").exists()
    assert not (site["base"] / "n2" / "secret_key").exists()


def test_it_keeps_check_values_never_the_keys(site):
    stored = site["database"].read_bytes()
    for value in first_keys(site).values():
        assert value.encode() not in stored


def test_it_lets_a_node_with_the_sites_keys_join(site):
    """The README's steps: the first node's key files copied, `make worker` (init_secrets, migrate,
    worker) on the new node; its cluster starts."""
    joining = site["base"] / "n2-ok"
    joining.mkdir(mode=0o700)
    for name in ("secret_key", "credentials.key"):
        (joining / name).write_text((site["first"] / name).read_text())
    env = node_env(joining, site["database"], NODE_NAME="n2")
    for step in (("init_secrets",), ("migrate", "--noinput")):
        done = manage(env, *step)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("Created") == 0
    worker = start_worker(env)
    try:
        lines = []
        for line in worker.stdout:
            lines.append(line)
            if "running." in line:
                break
        assert any("running." in line for line in lines), "".join(lines)[-3000:]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.communicate(timeout=60)


def test_it_records_no_key_that_cannot_read_the_credentials_already_stored(db, settings):
    """A site that ran before the check values existed gets them at its next migrate, from its own key:
    another key is refused, not recorded."""
    KeyCheck.objects.all().delete()
    SiteSshKey.objects.create(private_key="-----BEGIN OPENSSH PRIVATE KEY-----", public_key="ssh-ed25519 AAAA")
    own_key = settings.CREDENTIALS_KEY
    settings.CREDENTIALS_KEY = Fernet.generate_key().decode()
    with pytest.raises(NodeRefused, match=r"CREDENTIALS_KEY is not this site's.*\(core.SiteSshKey private_key\)"):
        record_key_checks(node_name="n2")
    assert not KeyCheck.objects.exists()
    settings.CREDENTIALS_KEY = own_key
    assert record_key_checks(node_name="n1") == ["SECRET_KEY", "CREDENTIALS_KEY"]
    check_node_can_join("n1")


def test_it_keeps_the_newer_version_when_older_code_migrates(db, monkeypatch):
    SiteVersion.objects.update_or_create(pk=1, defaults={"version": "99.0.0", "migrated_by": "n9"})
    assert record_site_version(node_name="n1") is False
    assert SiteVersion.objects.get().version == "99.0.0"
    with pytest.raises(NodeRefused, match=rf"runs version {core.version.VERSION} of the code, and the site version 99"):
        check_node_can_join("n1")
    monkeypatch.setattr(core.version, "VERSION", "100.0.0")
    assert record_site_version(node_name="n1") is True
    assert (SiteVersion.objects.get().version, SiteVersion.objects.get().migrated_by) == ("100.0.0", "n1")
    check_node_can_join("n1")
