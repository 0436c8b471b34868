"""The control plane, checked with the real SDK: SSO, PKI, collections, search, follow, faults."""

import os
import ssl
import urllib.request
from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

from tests.ovirtsim.helpers import add_disk, wait_for

GiB = 1024**3
DEMO_VMS = {"web01", "db01", "legacy01", "app01", "test01", "bigdata01"}


def test_it_serves_its_ca_and_the_sdk_verifies_the_server_with_it(demo_sim):
    context = ssl.create_default_context(cafile=demo_sim.ca_file)
    url = f"{demo_sim.url}/ovirt-engine/services/pki-resource?resource=ca-certificate&format=X509-PEM-CA"
    with urllib.request.urlopen(url, context=context) as response:
        assert response.read() == Path(demo_sim.ca_file).read_bytes()
    with demo_sim.connect() as connection:
        assert connection.test(raise_exception=True)


def test_it_refuses_a_connection_with_the_wrong_ca(demo_sim, tmp_path):
    from ovirtsim.pki import PKI

    other = PKI(tmp_path / "other")
    other.ensure()
    connection = demo_sim.connect(ca_file=str(other.ca_file))
    with pytest.raises(sdk.Error, match="(?i)certificate|SSL"):
        connection.system_service().get()


def test_it_refuses_bad_credentials_with_the_engines_message(demo_sim):
    connection = demo_sim.connect(password="wrong")
    with pytest.raises(sdk.AuthError, match="The username or password is incorrect"):
        connection.system_service().get()
    connection = demo_sim.connect(username="admin@nowhere")
    with pytest.raises(sdk.AuthError):
        connection.system_service().get()


def test_it_revokes_the_token_on_logout(demo_sim):
    connection = demo_sim.connect()
    connection.system_service().get()
    token = connection.authenticate()
    connection.close()
    request = urllib.request.Request(f"{demo_sim.api_url}/vms", headers={"Authorization": f"Bearer {token}"})
    context = ssl.create_default_context(cafile=demo_sim.ca_file)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, context=context)
    assert info.value.code == 401


def test_it_accepts_basic_authentication(demo_sim):
    import base64

    token = base64.b64encode(f"{demo_sim.username}:{demo_sim.password}".encode()).decode()
    request = urllib.request.Request(demo_sim.api_url, headers={"Authorization": f"Basic {token}"})
    context = ssl.create_default_context(cafile=demo_sim.ca_file)
    with urllib.request.urlopen(request, context=context) as response:
        assert b"<product_info>" in response.read()


def test_it_reports_itself_as_engine_4_5(conn):
    api = conn.system_service().get()
    assert api.product_info.name == "oVirt Engine"
    assert (api.product_info.version.major, api.product_info.version.minor) == (4, 5)
    assert api.summary.vms.total >= 6


def test_it_seeds_the_demo_data_center(conn):
    system = conn.system_service()
    assert [dc.name for dc in system.data_centers_service().list()] == ["Default"]
    assert sorted(c.name for c in system.clusters_service().list()) == ["Development", "Production"]
    hosts = system.hosts_service().list()
    assert len(hosts) == 3
    assert {h.status for h in hosts} == {types.HostStatus.UP, types.HostStatus.MAINTENANCE}
    domains = {sd.name: sd for sd in system.storage_domains_service().list()}
    assert domains["data-nfs"].type == types.StorageDomainType.DATA
    assert domains["data-nfs"].storage.type == types.StorageType.NFS
    assert domains["data-block"].storage.type == types.StorageType.ISCSI
    assert domains["export1"].type == types.StorageDomainType.EXPORT
    assert all(sd.available > 0 and sd.used is not None for sd in domains.values())

    vms = system.vms_service().list(follow="disk_attachments.disk")
    assert len(vms) >= 6
    assert all(1 <= len(vm.disk_attachments) <= 3 for vm in vms)
    disks = [a.disk for vm in vms for a in vm.disk_attachments]
    assert {d.format for d in disks} == {types.DiskFormat.COW, types.DiskFormat.RAW}
    assert any(d.backup == types.DiskBackup.INCREMENTAL for d in disks)
    running = [vm for vm in vms if vm.status == types.VmStatus.UP]
    assert any(vm.guest_operating_system is None for vm in running), "one running VM has no guest agent"
    assert any(vm.guest_operating_system is not None for vm in running)
    big = [d for d in disks if d.provisioned_size == 8 * GiB]
    assert big and 0.9 * GiB < big[0].actual_size < 1.2 * GiB


@pytest.mark.parametrize(
    "search, expected",
    [
        ("name=web01", {"web01"}),
        ("name=web*", {"web01"}),
        ("name=*01 and cluster=Development", {"app01", "test01", "bigdata01"}),
        ("status=up", {"web01", "db01", "legacy01"}),
        ("storage.name=data-block", {"db01", "app01"}),
        ("datacenter=Default and status=up and name=d*", {"db01"}),
        ("cluster=Production and status!=up", set()),
        ("tag=production", {"web01", "db01"}),
    ],
)
def test_it_searches_vms(conn, search, expected):
    names = {vm.name for vm in conn.system_service().vms_service().list(search=search)}
    # Other tests add VMs to the shared engine; judge the search on the seeded ones.
    assert names & DEMO_VMS == expected


def test_it_searches_other_collections_and_limits_with_max(conn):
    system = conn.system_service()
    assert [h.name for h in system.hosts_service().list(search="status=maintenance")] == ["host2"]
    assert {d.name for d in system.disks_service().list(search="storage.name=data-block")} >= {"db01_data"}
    data_domains = [s.name for s in system.storage_domains_service().list(search="name=data-*")]
    assert data_domains == ["data-block", "data-gluster", "data-nfs"]
    assert len(system.vms_service().list(max=2)) == 2
    with pytest.raises(sdk.Error, match="Unknown search attribute"):
        system.vms_service().list(search="colour=blue")


def test_it_follows_links_inline_and_by_href(conn):
    vm = conn.system_service().vms_service().list(search="name=web01")[0]
    assert vm.disk_attachments is not None and vm.disk_attachments.href.endswith(f"/vms/{vm.id}/diskattachments")
    attachments = conn.follow_link(vm.disk_attachments)
    assert len(attachments) == 2
    disk = conn.follow_link(attachments[0].disk)
    assert disk.provisioned_size > 0
    inline = conn.system_service().vms_service().vm_service(vm.id).get(follow="disk_attachments.disk,nics,cluster")
    assert {a.disk.alias for a in inline.disk_attachments} == {"web01_os", "web01_data"}
    assert inline.cluster.name == "Production"
    assert inline.nics[0].mac.address
    with pytest.raises(sdk.Error, match="Link 'colour' isn't valid"):
        conn.system_service().vms_service().vm_service(vm.id).get(follow="colour")


def test_it_answers_unknown_ids_with_404_faults(conn):
    system = conn.system_service()
    for service in (
        system.vms_service().vm_service("123"),
        system.disks_service().disk_service("123"),
        system.image_transfers_service().image_transfer_service("123"),
        system.storage_domains_service().storage_domain_service("123"),
    ):
        with pytest.raises(sdk.NotFoundError):
            service.get()


def test_it_answers_a_bad_request_with_400(empty_conn):
    disks = empty_conn.system_service().disks_service()
    with pytest.raises(sdk.Error, match="Disk size must be a positive") as info:
        disks.add(types.Disk(name="nosize", storage_domains=[types.StorageDomain(name="data")]))
    assert info.value.code == 400


@pytest.mark.parametrize(
    ("fmt", "sparse", "backup", "domain", "what"),
    [
        ("raw", True, "none", "data-block", "RAW Sparse backup-None"),  # an LV has no holes
        ("cow", False, "none", "data-nfs", "COW Preallocated backup-None"),  # only with incremental backup
        ("raw", False, "incremental", "data-nfs", "RAW Preallocated backup-Incremental"),  # QCOW2 only
    ],
)
def test_it_refuses_the_disk_configurations_the_engine_refuses(conn, fmt, sparse, backup, domain, what):
    disks = conn.system_service().disks_service()
    with pytest.raises(sdk.Error, match="incompatible with the storage domain type") as info:
        disks.add(
            types.Disk(
                name="x",
                provisioned_size=2**20,
                format=types.DiskFormat(fmt),
                sparse=sparse,
                backup=types.DiskBackup(backup),
                storage_domains=[types.StorageDomain(name=domain)],
            )
        )
    assert info.value.code == 400 and f"Disk configuration ({what})" in str(info.value)


def test_it_creates_disks_asynchronously(empty_conn):
    disks = empty_conn.system_service().disks_service()
    disk = disks.add(
        types.Disk(
            name="new",
            provisioned_size=2**20,
            format=types.DiskFormat.COW,
            storage_domains=[types.StorageDomain(name="data")],
        )
    )
    assert disk.status == types.DiskStatus.LOCKED
    wait_for(lambda: disks.disk_service(disk.id).get().status == types.DiskStatus.OK)


def test_it_manages_the_vm_life_cycle(empty_conn):
    vms = empty_conn.system_service().vms_service()
    vm = vms.add(
        types.Vm(
            name="lc", cluster=types.Cluster(name="Default"), template=types.Template(name="Blank"), memory=512 * 2**20
        )
    )
    assert vm.status == types.VmStatus.DOWN
    with pytest.raises(sdk.Error, match="already in use") as info:
        vms.add(types.Vm(name="lc", cluster=types.Cluster(name="Default")))
    assert info.value.code == 409
    service = vms.vm_service(vm.id)
    disk = add_disk(empty_conn, name="lc_os", size=2**20)
    service.disk_attachments_service().add(
        types.DiskAttachment(
            disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO_SCSI, bootable=True, active=True
        )
    )
    service.update(types.Vm(description="changed", memory=2**30))
    assert service.get().memory == 2**30
    service.start()
    wait_for(lambda: service.get().status == types.VmStatus.UP)
    assert service.get().host is not None
    with pytest.raises(sdk.Error, match="is running") as info:
        service.remove()
    assert info.value.code == 409
    service.stop()
    assert service.get().status == types.VmStatus.DOWN
    service.remove(detach_only=True)
    with pytest.raises(sdk.NotFoundError):
        service.get()
    assert empty_conn.system_service().disks_service().disk_service(disk.id).get().alias == "lc_os"


def test_it_attaches_deactivates_and_detaches_disks(empty_conn):
    vms = empty_conn.system_service().vms_service()
    vm = vms.add(types.Vm(name="att", cluster=types.Cluster(name="Default")))
    attachments = vms.vm_service(vm.id).disk_attachments_service()
    disk = add_disk(empty_conn, name="att_data", size=2**20)
    attachments.add(
        types.DiskAttachment(disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO, active=True)
    )
    other = vms.add(types.Vm(name="att2", cluster=types.Cluster(name="Default")))
    with pytest.raises(sdk.Error, match="already attached") as info:
        vms.vm_service(other.id).disk_attachments_service().add(types.DiskAttachment(disk=types.Disk(id=disk.id)))
    assert info.value.code == 409
    attachment = attachments.attachment_service(disk.id)
    attachment.update(types.DiskAttachment(active=False))
    assert attachment.get().active is False
    attachment.remove()
    assert attachments.list() == []
    empty_conn.system_service().disks_service().disk_service(disk.id).remove()
    with pytest.raises(sdk.NotFoundError):
        empty_conn.system_service().disks_service().disk_service(disk.id).get()


def test_it_fails_logins_on_the_switch(sim):
    sim.set_faults(reject_logins=True)
    with pytest.raises(sdk.AuthError):
        sim.connect().system_service().get()
    sim.set_faults(reject_logins=False)
    with sim.connect() as connection:
        connection.system_service().get()


def test_it_slows_every_call_on_the_switch(sim):
    impatient = sim.connect(timeout=1)  # a client that waits 1 s for an answer
    impatient.authenticate()
    # What a client notices of a slow engine: its calls outlast its timeout. The engine waits
    # 1.5 s before it answers anything, the client gives up after 1 s: no race, whatever the load.
    sim.set_faults(delay_ms=1500)
    with pytest.raises(sdk.Error, match="timed out"):
        impatient.system_service().vms_service().list()
    sim.set_faults(delay_ms=0)
    assert impatient.system_service().vms_service().list() == []
    impatient.close()


@pytest.mark.parametrize("status", [409, 500, 503])
def test_it_fails_a_share_of_requests_as_a_busy_or_failing_engine_does(sim, empty_conn, status):
    vms = empty_conn.system_service().vms_service()
    sim.set_faults(fail_requests={"rate": 1, "status": status, "methods": ["POST"]})
    try:
        vms.list()  # a GET is not among the methods: served
        with pytest.raises(sdk.Error) as refused:
            vms.add(types.Vm(name="refused", cluster=types.Cluster(name="Default")))
        if status == 503:  # Apache's page, not the engine's fault: the SDK says only that it is not XML
            assert "text/html" in str(refused.value)
        else:
            assert refused.value.code == status
        if status == 409:
            assert "Cannot add VM. Related operation is currently in progress" in refused.value.fault.detail
        assert sim.failed_requests() == {status: 1}
        with pytest.raises(RuntimeError, match="rate must be between 0 and 1"):
            sim.set_faults(fail_requests={"rate": 2})
    finally:
        sim.clear_faults()
    assert [vm.name for vm in vms.list()] == []  # the refused request made nothing
    vms.add(types.Vm(name="served", cluster=types.Cluster(name="Default")))


def test_it_fails_requests_at_the_rate_asked_repeatably_with_a_seed(sim, empty_conn):
    service = empty_conn.system_service().vms_service()

    def outcomes() -> list[bool]:
        sim.set_faults(fail_requests={"rate": 0.3, "status": 500, "seed": 7})
        found = []
        for _ in range(40):
            try:
                service.list()
                found.append(True)
            except sdk.Error:
                found.append(False)
        return found

    try:
        first = outcomes()
        assert outcomes() == first and 4 <= first.count(False) <= 20
    finally:
        sim.clear_faults()


def test_it_counts_requests_for_clients_that_must_bound_them(sim, empty_conn):
    before = sim.request_count()
    empty_conn.system_service().vms_service().list()
    empty_conn.system_service().disks_service().list()
    assert sim.request_count() - before == 2  # REST API calls only, not SSO or the control API


def test_it_keeps_its_state_across_a_restart(tmp_path):
    from ovirtsim import Simulator

    with Simulator(tmp_path / "engine", seed="empty") as sim, sim.connect() as connection:
        vm = (
            connection.system_service()
            .vms_service()
            .add(types.Vm(name="persist", cluster=types.Cluster(name="Default")))
        )
        password = sim.password
    with Simulator(tmp_path / "engine", seed="empty") as sim, sim.connect() as connection:
        assert sim.password == password
        assert connection.system_service().vms_service().vm_service(vm.id).get().name == "persist"


def test_it_stops_everything_it_started_on_sigterm(tmp_path):
    import json
    import os

    from ovirtsim import Simulator

    sim = Simulator(tmp_path / "engine", seed="empty").start()
    imageio_pid_alive = []
    info = json.loads((tmp_path / "engine" / "engine.json").read_text())
    assert info["url"].startswith("https://127.0.0.1:")
    assert info["ca_file"] == str(tmp_path / "engine" / "pki" / "ca.pem")
    children = [int(p) for p in os.popen(f"pgrep -P {sim.pid}").read().split()]
    assert children, "the imageio daemon runs as a child"
    sim.stop()
    for pid in children:
        try:
            os.kill(pid, 0)
            imageio_pid_alive.append(pid)
        except ProcessLookupError:
            pass
    assert imageio_pid_alive == []
    assert not (tmp_path / "engine" / "engine.json").exists()


def test_it_runs_in_process_as_well(tmp_path):
    from ovirtsim import Simulator

    with Simulator(tmp_path / "engine", seed="empty", in_process=True) as sim, sim.connect() as connection:
        assert sim.pid == os.getpid()
        vm = (
            connection.system_service()
            .vms_service()
            .add(types.Vm(name="inproc", cluster=types.Cluster(name="Default")))
        )
        assert connection.system_service().vms_service().vm_service(vm.id).get().name == "inproc"
        sim.set_faults(delay_ms=0)
    assert not (tmp_path / "engine" / "engine.json").exists()


def _get_xml(sim, path: str):
    import base64
    import xml.etree.ElementTree as ET

    token = base64.b64encode(f"{sim.username}:{sim.password}".encode()).decode()
    url = path if path.startswith("https://") else sim.url + path
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=sim.ca_file)) as response:
        assert response.status == 200
        return ET.fromstring(response.read())


def test_it_answers_every_link_it_writes(demo_sim, conn):
    system = conn.system_service()
    web = system.vms_service().list(search="name=web01")[0]
    active = next(
        s
        for s in system.vms_service().vm_service(web.id).snapshots_service().list()
        if s.snapshot_type == types.SnapshotType.ACTIVE
    )
    entities = [
        system.data_centers_service().list()[0].href,
        system.clusters_service().list()[0].href,
        system.hosts_service().list()[0].href,
        system.storage_domains_service().list(search="name=data-nfs")[0].href,
        web.href,
        system.disks_service().list(search="name=web01_os")[0].href,
        active.href,
    ]
    followed = 0
    for entity in entities:
        for link in _get_xml(demo_sim, entity).findall("link"):
            assert _get_xml(demo_sim, link.get("href")) is not None, link.get("href")
            followed += 1
    assert followed >= 25


def test_it_answers_what_sdk_examples_ask_for(conn):
    """Calls the ovirt-engine-sdk examples make: links of a VM, guest IPs, the Blank template."""
    vms = conn.system_service().vms_service()
    web = vms.list(search="name=web01")[0]
    assert conn.follow_link(web.template).name == "Blank"
    # The admin's SuperUser role, and any other user's the shared engine has been given by a test.
    roles = [p.role.id for p in conn.follow_link(web.permissions)]
    assert roles[0] == "00000000-0000-0000-0000-000000000001"
    devices = vms.vm_service(web.id).reported_devices_service().list()
    assert [ip.version for ip in devices[0].ips] == [types.IpVersion.V4, types.IpVersion.V6]
    down = vms.list(search="name=test01")[0]
    assert vms.vm_service(down.id).reported_devices_service().list() == []  # no agent answers
    stats = {s.name: s.values[0].datum for s in vms.vm_service(web.id).statistics_service().list()}
    assert stats["memory.installed"] == web.memory
    assert [t.name for t in conn.system_service().templates_service().list()] == ["Blank"]
    (network,) = conn.system_service().networks_service().list()
    assert network.name == "ovirtmgmt" and conn.follow_link(network.data_center).name == "Default"


def test_it_searches_with_the_engines_case_rules_and_pages(conn):
    vms = conn.system_service().vms_service()
    assert vms.list(search="name=WEB01") == []  # case_sensitive is true unless asked otherwise
    assert [v.name for v in vms.list(search="name=WEB01", case_sensitive=False)] == ["web01"]
    assert {v.name for v in vms.list(search="status=UP")} & DEMO_VMS == {"web01", "db01", "legacy01"}
    names = [v.name for v in vms.list(search="name=*01")]
    pages, index = [], 1
    while page := vms.list(search=f"name=*01 page {index}", max=2):
        pages.append([v.name for v in page])
        index += 1
    assert sum(pages, []) == names and all(len(p) <= 2 for p in pages)
    with pytest.raises(sdk.Error, match="Cannot parse search query"):
        vms.list(search="page 0")


def test_it_adds_assigns_and_removes_tags(conn):
    system = conn.system_service()
    tag = system.tags_service().add(types.Tag(name="sim-test-tag", description="for a test"))
    with pytest.raises(sdk.Error, match="Tag name is in use") as info:
        system.tags_service().add(types.Tag(name="sim-test-tag"))
    assert info.value.code == 409
    vm = system.vms_service().list(search="name=test01")[0]
    vm_tags = system.vms_service().vm_service(vm.id).tags_service()
    assert vm_tags.add(types.Tag(name="sim-test-tag")).id == tag.id  # by name, as the SDK example does
    assert "sim-test-tag" in {t.name for t in vm_tags.list()}
    assert [v.name for v in system.vms_service().list(search="tag=sim-test-tag")] == ["test01"]
    vm_tags.tag_service(tag.id).remove()
    assert "sim-test-tag" not in {t.name for t in vm_tags.list()}
    with pytest.raises(sdk.NotFoundError):
        vm_tags.add(types.Tag(name="no-such-tag"))
    system.tags_service().tag_service(tag.id).remove()
    assert "sim-test-tag" not in {t.name for t in system.tags_service().list()}


def test_it_serves_and_removes_disks_through_their_storage_domain(empty_conn):
    sds = empty_conn.system_service().storage_domains_service()
    sd = sds.list(search="name=data")[0]
    disk = add_disk(empty_conn, name="on-domain", size=GiB // 64, fmt="cow", sd_name="data")
    on_domain = sds.storage_domain_service(sd.id).disks_service()
    assert on_domain.disk_service(disk.id).get().name == "on-domain"
    on_domain.disk_service(disk.id).remove()
    with pytest.raises(sdk.NotFoundError):
        empty_conn.system_service().disks_service().disk_service(disk.id).get()


def test_it_records_events_a_client_adds(conn):
    events = conn.system_service().events_service()
    vm = conn.system_service().vms_service().list(search="name=test01")[0]
    added = events.add(
        types.Event(
            vm=types.Vm(id=vm.id),
            origin="mybackup",
            severity=types.LogSeverity.NORMAL,
            custom_id=424242,
            description="Backup of virtual machine 'test01' started.",
        )
    )
    assert (added.origin, added.custom_id, added.code) == ("mybackup", 424242, 12000)
    assert events.list(max=1)[0].description == "Backup of virtual machine 'test01' started."
    with pytest.raises(sdk.Error, match="origin and custom_id") as info:
        events.add(types.Event(description="no origin", severity=types.LogSeverity.NORMAL))
    assert info.value.code == 400
