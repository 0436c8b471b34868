"""Proxy VMs: a node says which VM it runs in; an admin marks that VM as the proxy of its cluster."""

import io

import pytest
from django.core.management import CommandError, call_command

from core import roles
from core.env import machine_uuid
from core.models import AuditEvent
from inventory.models import VM, Cluster, Manager, ProxyVM
from inventory.proxies import offered_proxies
from jobs.models import Node
from jobs.nodes import join_site

PROXY_ID = "0a1b2c3d-0000-4000-8000-000000000001"


@pytest.fixture
def estate(db):
    """Cluster Production with VM proxy01, inside which node n1 runs; node n2 runs elsewhere."""
    manager = Manager.objects.create(name="m", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    production = Cluster.objects.create(
        manager=manager, engine_id="11111111-0000-4000-8000-000000000001", name="Production"
    )
    Cluster.objects.create(manager=manager, engine_id="11111111-0000-4000-8000-000000000002", name="Test")
    proxy01 = VM.objects.create(manager=manager, engine_id=PROXY_ID, name="proxy01", cluster=production)
    VM.objects.create(
        manager=manager, engine_id="0a1b2c3d-0000-4000-8000-000000000002", name="web01", cluster=production
    )
    join_site(name="n1", slots=2, clusters=[], vm_id=PROXY_ID.upper())
    join_site(name="n2", slots=2, clusters=["Test"])
    return proxy01


def proxy(*args) -> str:
    out = io.StringIO()
    call_command("proxy", *args, stdout=out)
    return out.getvalue()


def test_it_offers_the_vm_a_node_runs_in_and_marks_it_for_that_node(estate):
    assert Node.objects.get(name="n1").vm_id == PROXY_ID  # SMBIOS UUIDs come upper-case
    assert "proxy01\toffered: node n1 runs inside it (manage.py proxy add proxy01)" in proxy("list")
    said = proxy("add", "proxy01")
    assert said.startswith("VM proxy01 is now the proxy VM of node n1 for cluster Production (VirtIO-SCSI")
    marked = ProxyVM.objects.get()
    assert (marked.vm, marked.node_id, marked.device_dir, marked.max_attached) == (estate, "n1", "/dev/disk/by-id", 8)
    assert AuditEvent.objects.filter(action="proxy_created").count() == 1
    listed = proxy("list")
    assert "proxy01\tcluster Production\tnode n1\tvirtio_scsi\t/dev/disk/by-id\tat most 8 attached" in listed
    assert "offered" not in listed
    assert proxy("remove", "proxy01") == "VM proxy01 is no longer a proxy VM.\n"
    assert not ProxyVM.objects.exists() and VM.objects.filter(name="proxy01").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["nosuchvm"], "No VM named 'nosuchvm' in the inventory"),
        (["web01"], "No node says it runs inside VM web01"),
        (["proxy01", "--node", "n9"], "There is no node named 'n9'; nodes: n1, n2."),
        (["web01", "--node", "n1"], f"Node n1 runs inside another VM ({PROXY_ID}), not in web01"),
        (["web01", "--node", "n2"], "Node n2 serves clusters Test, not Production, the cluster of VM web01"),
        (["proxy01", "--device-dir", "dev/disk"], "The device directory 'dev/disk' must be an absolute path"),
        (["proxy01", "--device-dir", "/dev/../tmp"], "must be an absolute path without '..'"),
        (["proxy01", "--interface", "ide"], "Value 'ide' is not a valid choice."),
        (["proxy01", "--max-attached", "0"], "Between 1 and 64 disks attached at once."),
    ],
)
def test_it_refuses_a_proxy_it_could_not_use(estate, args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        proxy("add", *args)
    assert not ProxyVM.objects.exists()


def test_it_refuses_scsi_attachments_to_a_vm_without_virtio_scsi(estate):
    VM.objects.filter(pk=estate.pk).update(virtio_scsi=False)
    with pytest.raises(CommandError, match="VM proxy01 has VirtIO-SCSI disabled: enable it"):
        proxy("add", "proxy01")
    assert "interface VirtIO" in proxy("add", "proxy01", "--interface", "virtio").replace(
        "(VirtIO,", "interface VirtIO"
    )
    with pytest.raises(CommandError, match="VM proxy01 is already a proxy VM \\(of node n1\\)"):
        proxy("add", "proxy01", "--interface", "virtio")


def test_it_lets_admins_mark_proxies_through_the_api(estate, api_as):
    body = {"vm": estate.pk, "device_dir": "/run/proxy/by-id"}
    assert api_as(roles.OPERATOR).post("/api/v1/proxies/", body, format="json").status_code == 403
    refused = api_as(roles.ADMIN).post("/api/v1/proxies/", {**body, "node": "n2"}, format="json")
    assert refused.status_code == 400
    assert "Node n2 runs inside another VM" not in refused.json()["error"]["message"]
    assert "Node n2 serves clusters Test, not Production" in refused.json()["error"]["message"]
    made = api_as(roles.ADMIN).post("/api/v1/proxies/", body, format="json")
    assert made.status_code == 201, made.json()
    assert {k: made.json()[k] for k in ("vm_name", "cluster", "node", "device_dir")} == {
        "vm_name": "proxy01",
        "cluster": "Production",
        "node": "n1",
        "device_dir": "/run/proxy/by-id",
    }
    url = f"/api/v1/proxies/{made.json()['id']}/"
    bad = api_as(roles.ADMIN).patch(url, {"max_attached": 100}, format="json")
    assert bad.status_code == 400 and "Between 1 and 64" in bad.json()["error"]["message"]
    assert api_as(roles.ADMIN).patch(url, {"max_attached": 4}, format="json").json()["max_attached"] == 4
    assert [p["vm_name"] for p in api_as(roles.VIEWER).get("/api/v1/proxies/").json()["results"]] == ["proxy01"]


def test_it_reads_the_machines_smbios_uuid(tmp_path):
    uuid_file = tmp_path / "product_uuid"
    uuid_file.write_text(PROXY_ID.upper() + "\n")
    assert machine_uuid(str(uuid_file)) == PROXY_ID
    assert machine_uuid(str(tmp_path / "none")) == ""


def test_it_marks_an_offered_vm_from_the_page_for_admins_only(estate, client, users):
    client.force_login(users[roles.OPERATOR])
    page = client.get("/inventory/proxies/").content.decode()
    assert "No proxy VM yet." in page and "proxy01" in page and "Mark as proxy" not in page
    assert client.post(f"/inventory/proxies/mark/{estate.pk}/").status_code == 403
    client.force_login(users[roles.ADMIN])
    web01 = VM.objects.get(name="web01")
    refused = client.post(f"/inventory/proxies/mark/{web01.pk}/", follow=True).content.decode()
    assert "No node says it runs inside VM web01" in refused
    done = client.post(f"/inventory/proxies/mark/{estate.pk}/", {"interface": "virtio"}, follow=True).content.decode()
    assert "VM proxy01 is now the proxy VM of node n1." in done
    assert ProxyVM.objects.get().interface == "virtio"
    assert "Offered" not in done and "Remove</button>" in done
    assert AuditEvent.objects.filter(action="proxy_created", source="page").count() == 1


def test_it_offers_the_demo_engines_proxy01_to_the_node_inside_it(manager):
    """The demo engine's proxy01 runs on this machine: a node started with its id (as its SMBIOS UUID
    would give it) finds it offered once the inventory is synced, with VirtIO-SCSI as the engine says."""
    proxy01 = VM.objects.get(manager=manager, name="proxy01")
    assert proxy01.virtio_scsi is True and proxy01.cluster.name == "Production"
    join_site(name="inside", slots=1, clusters=["Production"], vm_id=str(proxy01.engine_id))
    assert [(vm.name, node.name) for vm, node in offered_proxies()] == [("proxy01", "inside")]
    assert proxy("add", "proxy01").startswith("VM proxy01 is now the proxy VM of node inside for cluster Production")


def test_it_shows_a_proxy_whose_node_lvm_filter_lets_attached_disks_through_with_the_fix(estate, client, users):
    node = Node.objects.get(name="n1")
    proxy = ProxyVM.objects.create(vm=estate, node=node, interface="virtio")
    client.force_login(users[roles.VIEWER])
    node.lvm_config = 'filter=["a|.*|"]\nglobal_filter=["a|.*|"]\nuse_devicesfile=0\ndevicesfile_exists=0\n'
    node.save()
    page = client.get("/inventory/proxies/").content.decode()
    assert "lets it see disks attached to the proxy (such as /dev/vdq" in page
    assert "global_filter = [ &quot;r|^/dev/disk/by-id/virtio-.*|&quot;" in page
    node.lvm_config = 'filter=["a|^/dev/vda2$|","r|.*|"]\nglobal_filter=["a|.*|"]\nuse_devicesfile=0\n'
    node.save()
    assert proxy.lvm_filter_problem() == ""
    assert "hides attached disks" in client.get("/inventory/proxies/").content.decode()
