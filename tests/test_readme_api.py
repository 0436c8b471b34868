"""The README's API examples, run as they are written (bash and curl) against a live server: they
back up a VM, restore its backup and follow the job to its end."""

import re
import subprocess
from pathlib import Path

import pytest

from core import roles
from core.tokens import issue_token
from inventory.models import VM, Cluster, DataCenter, Manager
from jobs.models import Job
from repository.models import BackupDestination, BackupPoint

README = Path(__file__).resolve().parent.parent / "README.md"

pytestmark = pytest.mark.django_db(transaction=True)


def api_examples() -> list[str]:
    """The shell blocks of the README's API section, in order."""
    section = README.read_text().split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def run(script: str, *, site: str, token: str) -> str:
    script = script.replace("SITE=http://127.0.0.1:8000", f"SITE={site}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={"PATH": "/usr/bin:/bin", "TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


def test_it_runs_the_readmes_curl_examples_for_backup_restore_and_polling(
    live_server, make_user, destination_dir, names_free
):
    """The rows have no engine behind them: the restore's check that no VM has the new name asks none
    (names_free); tests/recovery/test_restore_names.py asks the simulated one."""
    manager = Manager.objects.create(name="prod", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    dc = DataCenter.objects.create(manager=manager, engine_id="00000000-0000-0000-00dc-000000000001", name="Default")
    cluster = Cluster.objects.create(
        manager=manager, engine_id="00000000-0000-0000-00c1-000000000001", name="Production", data_center=dc
    )
    web01 = VM.objects.create(
        manager=manager, engine_id="00000000-0000-0000-0000-000000000001", name="web01", cluster=cluster
    )
    VM.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-000000000002", name="db01", cluster=cluster)
    nas = BackupDestination.objects.create(name="nas", path=str(destination_dir))
    point = BackupPoint.objects.create(vm=web01, destination=nas, strategy="image_transfer", status="complete")
    _, token = issue_token(user=make_user(roles.OPERATOR, "otto"), name="readme")
    requests, polling = api_examples()

    out = run(requests, site=live_server.url, token=token)
    backup = Job.objects.get(kind="backup", vm=web01)
    restore = Job.objects.get(kind="restore")
    assert out.splitlines() == [
        f"backup: {live_server.url}/api/v1/jobs/{backup.pk}/",
        f"restore: {live_server.url}/api/v1/jobs/{restore.pk}/",
    ]
    assert backup.params["destination"] == nas.pk and restore.params["point"] == point.pk

    # No worker runs here: the job is ended as a worker would end it, and the loop sees it end.
    Job.objects.filter(pk=backup.pk).update(status=Job.Status.FAILED, error="The engine refused the snapshot.")
    header = requests.split("\n\n", 1)[0]  # SITE, AUTH and field(), as a reader has them from the block above
    out = run(f"{header}\nJOB=/api/v1/jobs/{backup.pk}/\n{polling}", site=live_server.url, token=token)
    assert out.splitlines() == [f"job /api/v1/jobs/{backup.pk}/: failed", "The engine refused the snapshot."]
