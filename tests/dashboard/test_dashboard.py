from core import roles
from inventory.models import VM, Manager


def test_it_counts_vms_covered_by_policy_rules_on_the_dashboard(client, make_user, tmp_path):
    from policies.models import Policy
    from repository.models import BackupDestination

    viewer = make_user(roles.VIEWER, "vic")
    manager = Manager.objects.create(name="e", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    for n, name in enumerate(["web01", "web02", "db01"]):
        VM.objects.create(manager=manager, engine_id=f"00000000-0000-0000-0000-00000000000{n}", name=name)
    (tmp_path / "d").mkdir()
    dest = BackupDestination.objects.create(name="d", path=str(tmp_path / "d"))
    Policy.objects.create(name="web", destination=dest, match_name_regex="^web")
    client.force_login(viewer)
    page = client.get("/").content.decode()
    # Covered is not protected: web01 and web02 have no backup yet, so they are stale.
    assert 'id="count-vms">3<' in page
    assert '<a class="card rpo-stale bad" id="rpo-stale" href="/inventory/?rpo=stale"><b>2</b>' in page
    assert '<a class="card rpo-uncovered" id="rpo-uncovered" href="/inventory/?rpo=uncovered"><b>1</b>' in page
