"""Restore proofs by policy (issue 24): the settings and their checks, what the ticker queues and
records (one proof at a time per policy, of each VM's newest complete backup), the alert of a failed
proof, and the last proof of each VM on the dashboard and the VM page. No VM boots here: the rows a
proof leaves are made by hand, and the queued jobs are never dispatched (the test's transaction
never commits)."""

import datetime
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from alerts.models import AlertRule
from core import roles
from core.models import AuditEvent
from inventory.models import VM, Cluster, DataCenter, Manager
from jobs.models import Job
from policies.forms import PolicyForm
from policies.models import Policy
from policies.schedule import policy_slots, tick
from recovery.models import InstantRestore
from repository.models import BackupDestination, BackupPoint


def at(day: int, hour: int, minute: int = 0) -> datetime.datetime:
    """A moment of January 2026 in the site's time zone."""
    return timezone.make_aware(datetime.datetime(2026, 1, day, hour, minute))


def engine_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def estate(db, tmp_path):
    """One engine, clusters Production and Proofs, VMs app01, db01 and web01 in Production."""
    manager = Manager.objects.create(
        name="demo", api_url="https://engine.example/ovirt-engine/api", username="admin@internal", password="x"
    )
    dc = DataCenter.objects.create(manager=manager, engine_id=engine_id(), name="dc")
    production = Cluster.objects.create(manager=manager, engine_id=engine_id(), name="Production", data_center=dc)
    Cluster.objects.create(manager=manager, engine_id=engine_id(), name="Proofs", data_center=dc)
    vms = {
        name: VM.objects.create(manager=manager, engine_id=engine_id(), name=name, cluster=production, status="up")
        for name in ("app01", "db01", "web01")
    }
    (tmp_path / "repo").mkdir()
    (tmp_path / "old").mkdir()
    repo = BackupDestination.objects.create(name="repo", path=str(tmp_path / "repo"))
    old = BackupDestination.objects.create(name="old", path=str(tmp_path / "old"))
    return {"manager": manager, "vms": vms, "repo": repo, "old": old}


@pytest.fixture
def nightly(estate):
    """Backs up app01, db01 and web01 at 01:00 and proves them at 06:00."""
    policy = Policy.objects.create(
        name="nightly", destination=estate["repo"], schedule="0 1 * * *", prove_restores=True,
        proof_schedule="0 6 * * *", created=at(1, 18),
    )  # fmt: skip
    policy.vms.set(estate["vms"].values())
    return policy


def point(vm, destination, *, hours_ago: int, status=BackupPoint.Status.COMPLETE, policy=None) -> BackupPoint:
    return BackupPoint.objects.create(
        vm=vm,
        destination=destination,
        policy=policy,
        strategy="image_transfer",
        status=status,
        started=at(2, 1) - datetime.timedelta(hours=hours_ago),
    )


def proofs_queued() -> list[tuple]:
    return [
        (i.name, i.vm.name, i.point_id, i.cluster, i.who, i.status, i.purpose)
        for i in InstantRestore.objects.select_related("vm").order_by("pk")
    ]


def end_proof(instant: InstantRestore, *, ok: bool = True) -> None:
    """What the proof job leaves once it has ended (recovery.instant.workflow.run_proof)."""
    job = Job.objects.get(kind="restore_proof", params__instant=instant.pk)
    job.start()
    if ok:
        instant.move(frm=InstantRestore.ACTIVE, to=InstantRestore.Status.DISCARDED, proof_ok=True, seconds_to_up=41.5)
        job.succeed()
    else:
        instant.move(frm=InstantRestore.ACTIVE, to=InstantRestore.Status.FAILED, proof_ok=False, error="went down")
        job.fail("The restore proof failed: VM went down instead of up.")


# ----- settings ----------------------------------------------------------------------------------


def test_it_proves_no_restore_unless_asked(estate):
    policy = Policy.objects.create(name="plain", destination=estate["repo"])
    assert (policy.prove_restores, policy.proof_schedule, policy.proof_cluster) == (False, "0 6 * * *", "")
    policy.full_clean()


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"proof_cluster": "Nowhere"}, "proof_cluster", "No cluster named Nowhere in the inventory"),
        ({"proof_schedule": "6 * *"}, "proof_schedule", "is not a cron schedule"),
        ({"proof_schedule": "0 1 * * *"}, "proof_schedule", "The proofs would start with the backups"),
    ],
)
def test_it_refuses_proof_settings_that_cannot_work_on_the_model(nightly, changes, field, message):
    for name, value in changes.items():
        setattr(nightly, name, value)
    with pytest.raises(ValidationError) as refused:
        nightly.full_clean()
    assert message in " ".join(refused.value.message_dict[field])


def test_it_takes_a_cluster_of_the_inventory_for_the_proofs_but_not_one_gone_from_the_engine(nightly):
    nightly.proof_cluster = "Proofs"
    nightly.full_clean()
    Cluster.objects.filter(name="Proofs").update(missing_since=timezone.now())
    with pytest.raises(ValidationError) as refused:
        nightly.full_clean()
    assert refused.value.message_dict == {
        "proof_cluster": ["No cluster named Proofs in the inventory (sync its manager first)."]
    }


def test_it_offers_the_proof_settings_on_the_form_with_help_and_shows_them(client, users, nightly):
    form = PolicyForm(instance=nightly)
    for name in ("prove_restores", "proof_schedule", "proof_cluster"):
        assert form.fields[name].help_text, name
    client.force_login(users[roles.VIEWER])
    page = client.get(f"/policies/{nightly.pk}/").content.decode()
    assert "<code>0 6 * * *</code>" in page and "the VM's own cluster, one VM at a time" in page


def test_it_sets_and_checks_the_proof_settings_through_the_api(api_as, nightly):
    api = api_as(roles.OPERATOR)
    url = f"/api/v1/policies/{nightly.pk}/"
    refused = api.patch(url, {"proof_cluster": "Nowhere"}, format="json")
    assert refused.status_code == 400
    assert "No cluster named Nowhere" in refused.json()["error"]["fields"]["proof_cluster"][0]
    same_time = api.patch(url, {"proof_schedule": "0 1 * * *"}, format="json")
    assert same_time.status_code == 400 and "proof_schedule" in same_time.json()["error"]["fields"]
    changed = api.patch(url, {"proof_cluster": "Proofs", "proof_schedule": "30 5 * * *"}, format="json")
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert (body["prove_restores"], body["proof_schedule"], body["proof_cluster"]) == (True, "30 5 * * *", "Proofs")
    assert body["next_proofs"] is not None
    off = api.patch(url, {"prove_restores": False}, format="json").json()
    assert off["next_proofs"] is None


# ----- the ticker --------------------------------------------------------------------------------


def test_it_queues_one_proof_at_a_time_of_each_vms_newest_complete_backup(estate, nightly):
    vms, repo, old = estate["vms"], estate["repo"], estate["old"]
    # web01: its newest complete backup is the one of 2 h ago (newer ones failed or still run).
    point(vms["web01"], repo, hours_ago=26)
    web_newest = point(vms["web01"], repo, hours_ago=2)
    point(vms["web01"], repo, hours_ago=1, status=BackupPoint.Status.FAILED)
    point(vms["web01"], repo, hours_ago=0, status=BackupPoint.Status.RUNNING)
    # db01: the policy's own backup on the destination it had before is newer than another's there.
    db_newest = point(vms["db01"], old, hours_ago=3, policy=nightly)
    point(vms["db01"], old, hours_ago=1)  # not the policy's, not on its destination
    # app01 has no backup at all.

    assert tick(now=at(2, 5, 59)).proof_jobs == []
    (first,) = tick(now=at(2, 6)).proof_jobs
    assert proofs_queued() == [
        (f"proof-db01-{db_newest.pk}", "db01", db_newest.pk, "Production", "policy nightly", "booting", "proof")
    ]
    instant = InstantRestore.objects.get()
    assert (first.kind, first.origin, first.status, first.vm, first.params) == (
        "restore_proof",
        "schedule",
        "queued",
        vms["db01"],
        {"instant": instant.pk},
    )
    assert first.started_by == nightly
    assert policy_slots(first) == []  # no backup's slot: the proofs go one at a time by themselves
    started = AuditEvent.objects.get(action="restore_proofs_started")
    assert (started.source, started.target_name, started.details["vms"]) == ("schedule", "nightly", 2)
    assert started.details["note"] == "1 VM(s) have no complete backup to prove: app01."

    # One at a time: the next waits while db01's proof runs, and the proof time is not run twice.
    assert tick(now=at(2, 6, 1)).proof_jobs == []
    end_proof(instant)
    (second,) = tick(now=at(2, 6, 2)).proof_jobs
    assert [row[:3] for row in proofs_queued()] == [
        (f"proof-db01-{db_newest.pk}", "db01", db_newest.pk),
        (f"proof-web01-{web_newest.pk}", "web01", web_newest.pk),
    ]
    end_proof(InstantRestore.objects.get(vm=vms["web01"]))
    assert tick(now=at(2, 6, 3)).proof_jobs == []
    nightly.refresh_from_db()
    assert (nightly.proofs_due, nightly.proofs_pending) == (at(2, 6), [])
    # The next night: a new round.
    point(vms["app01"], repo, hours_ago=-20)
    assert [job.vm.name for job in tick(now=at(3, 6)).proof_jobs] == ["app01"]


def test_it_skips_a_vm_with_a_proof_at_work_and_says_so(estate, nightly):
    vms, repo = estate["vms"], estate["repo"]
    busy = point(vms["db01"], repo, hours_ago=2)
    web = point(vms["web01"], repo, hours_ago=2)
    InstantRestore.objects.create(
        point=busy, vm=vms["db01"], purpose="proof", name="proof-db01-by-hand", cluster="Production", node="n"
    )
    (job,) = tick(now=at(2, 6)).proof_jobs
    assert job.vm == vms["web01"] and InstantRestore.objects.get(name=f"proof-web01-{web.pk}").point == web
    skipped = AuditEvent.objects.get(action="restore_proof_skipped")
    assert skipped.details == {
        "vm": "db01",
        "reason": f"restore proof {InstantRestore.objects.get(vm=vms['db01']).pk} (proof-db01-by-hand) is still at "
        "work on it.",
    }


def test_it_boots_the_proofs_in_the_policys_cluster_when_the_vms_engine_has_it(estate, nightly):
    vms, repo = estate["vms"], estate["repo"]
    other = Manager.objects.create(
        name="branch", api_url="https://b.example/ovirt-engine/api", username="a", password="x"
    )
    remote = VM.objects.create(manager=other, engine_id=engine_id(), name="remote01", status="up")
    nightly.vms.add(remote)
    point(remote, repo, hours_ago=2)
    db = point(vms["db01"], repo, hours_ago=2)
    Policy.objects.filter(pk=nightly.pk).update(proof_cluster="Proofs")
    (job,) = tick(now=at(2, 6)).proof_jobs
    assert proofs_queued()[0][:4] == (f"proof-db01-{db.pk}", "db01", db.pk, "Proofs")
    end_proof(InstantRestore.objects.get())
    assert tick(now=at(2, 6, 1)).proof_jobs == []
    (skipped,) = AuditEvent.objects.filter(action="restore_proof_skipped")
    assert skipped.details == {"vm": "remote01", "reason": "its engine (branch) has no cluster named Proofs."}


def test_it_records_a_proof_time_found_too_late_as_missed(estate, nightly):
    point(estate["vms"]["db01"], estate["repo"], hours_ago=2)
    assert tick(now=at(2, 9)).proof_jobs == []
    missed = AuditEvent.objects.get(action="restore_proofs_missed")
    assert missed.details["note"].startswith("Missed: due at 2026-01-02 06:00")
    assert not InstantRestore.objects.exists()
    assert tick(now=at(2, 9, 1)).proof_jobs == []  # and not started later either


def test_it_proves_nothing_for_a_disabled_policy_or_one_not_asking(estate, nightly):
    point(estate["vms"]["db01"], estate["repo"], hours_ago=2)
    Policy.objects.filter(pk=nightly.pk).update(enabled=False)
    assert tick(now=at(2, 6)).proof_jobs == []
    Policy.objects.filter(pk=nightly.pk).update(enabled=True, prove_restores=False)
    assert tick(now=at(2, 6, 1)).proof_jobs == []
    assert not InstantRestore.objects.exists()


# ----- alerts ------------------------------------------------------------------------------------


def proof_job(instant: InstantRestore, *, started_by=None) -> Job:
    return Job.objects.create(
        kind="restore_proof",
        name=f"{instant.name} (restore proof)",
        vm=instant.vm,
        params={"instant": instant.pk},
        started_by=started_by,
    )


def test_it_alerts_the_policy_when_its_proof_fails_naming_the_vm_backup_and_step(estate, nightly):
    rule = AlertRule.objects.create(policy=nightly, emails="ops@example.com")
    db = point(estate["vms"]["db01"], estate["repo"], hours_ago=2)
    instant = InstantRestore.objects.create(
        point=db, vm=db.vm, purpose="proof", name=f"proof-db01-{db.pk}", cluster="Production", node="n",
        step="Waiting for the guest agent",
    )  # fmt: skip
    job = proof_job(instant, started_by=nightly)
    job.start()
    job.fail(f"The restore proof of backup {db.pk} failed: VM proof-db01-{db.pk}'s guest agent did not answer.")
    (event,) = rule.events.all()
    assert (event.kind, event.vm) == ("failed", db.vm)
    assert event.subject == f"Restore proof of db01 (backup {db.pk}) failed at: Waiting for the guest agent"
    assert event.details == {
        "job": job.pk,
        "point": db.pk,
        "step": "Waiting for the guest agent",
        "error": job.error,
    }


def test_it_alerts_the_backups_policy_when_a_proof_by_hand_fails_and_not_when_one_succeeds(estate, nightly):
    rule = AlertRule.objects.create(policy=nightly, emails="ops@example.com")
    web = point(estate["vms"]["web01"], estate["repo"], hours_ago=2, policy=nightly)
    instant = InstantRestore.objects.create(
        point=web, vm=web.vm, purpose="proof", name="by-hand", cluster="Production", node="n", step="Starting VM"
    )
    ok = proof_job(instant)
    ok.start()
    ok.succeed()
    assert not rule.events.exists()
    failed = proof_job(instant)
    failed.start()
    failed.fail("The restore proof failed: VM by-hand went down instead of up.")
    assert rule.events.get().subject == f"Restore proof of web01 (backup {web.pk}) failed at: Starting VM"


# ----- the dashboard and the VM page -------------------------------------------------------------


def proof(vm, *, ok: bool | None, hours_ago: int, status=InstantRestore.Status.DISCARDED, **fields):
    return InstantRestore.objects.create(
        vm=vm,
        purpose="proof",
        name=f"proof-{vm.name}-{hours_ago}",
        node="n",
        status=status,
        proof_ok=ok,
        created=timezone.now() - datetime.timedelta(hours=hours_ago),
        **fields,
    )


def test_it_shows_each_vms_last_proof_on_the_dashboard_and_the_vm_page(client, users, estate):
    client.force_login(users[roles.VIEWER])
    vms = estate["vms"]
    proof(vms["db01"], ok=True, hours_ago=30, seconds_to_up=50.0, proof_answer="old answer")
    proof(vms["db01"], ok=False, hours_ago=6, status="failed", step="Starting VM db01", error="went down instead of up")
    proof(vms["web01"], ok=True, hours_ago=5, seconds_to_up=41.46, proof_answer="guest agent answered: web01.lab")
    proof(vms["web01"], ok=None, hours_ago=0, status="booting")  # at work: not a result yet
    # A restore is not a proof.
    InstantRestore.objects.create(vm=vms["app01"], name="app01-back", node="n", status="running")

    page = client.get("/").content.decode()
    assert "Last restore proofs" in page and 'id="count-proofs-failed">1<' in page
    rows = page.split('<tr class="proof">')[1:]
    assert len(rows) == 2
    assert "db01" in rows[0] and "failed" in rows[0] and "Starting VM db01: went down instead of up" in rows[0]
    # core.formats.duration: whole seconds from 10 s on
    assert "web01" in rows[1] and "41\xa0s" in rows[1] and "guest agent answered: web01.lab" in rows[1]
    assert "old answer" not in page and "app01" not in page

    web = client.get(f"/inventory/vms/{vms['web01'].pk}/").content.decode()
    assert 'id="restore-proof"' in web and "41\xa0s" in web and "guest agent answered: web01.lab" in web
    db = client.get(f"/inventory/vms/{vms['db01'].pk}/").content.decode()
    assert "Failed" in db and "went down instead of up" in db
    app = client.get(f"/inventory/vms/{vms['app01'].pk}/").content.decode()
    assert "Never proven" in app


def test_it_reads_every_vms_last_proof_in_as_many_queries_for_many_vms_as_for_few(client, users, estate):
    client.force_login(users[roles.VIEWER])
    manager, vms = estate["manager"], estate["vms"]
    for vm in vms.values():
        proof(vm, ok=True, hours_ago=2, seconds_to_up=30.0)

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/").status_code == 200
        return len(ctx)

    few = queries()
    for n in range(40):
        vm = VM.objects.create(manager=manager, engine_id=engine_id(), name=f"vm{n:02d}", status="up")
        proof(vm, ok=n % 3 != 0, hours_ago=1, seconds_to_up=20.0)
        proof(vm, ok=True, hours_ago=3)
    assert queries() == few
    page = client.get("/").content.decode()
    assert page.count('<tr class="proof">') == 20 and 'id="count-proofs-failed">14<' in page
    assert "And 23 more VMs" in page


def test_it_creates_a_policy_proving_its_restores_through_the_api(api_as, estate):
    api = api_as(roles.OPERATOR)
    body = {"name": "proved", "destination": estate["repo"].pk, "prove_restores": True}
    created = api.post("/api/v1/policies/", body, format="json")
    assert created.status_code == 201, created.content
    assert (created.json()["proof_schedule"], created.json()["proof_cluster"]) == ("0 6 * * *", "")
    refused = api.post("/api/v1/policies/", {**body, "name": "again", "proof_cluster": "Nowhere"}, format="json")
    assert "proof_cluster" in refused.json()["error"]["fields"]
