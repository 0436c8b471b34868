"""The export storage domain strategy's own cases (the contract suite holds it to what every strategy
does): a copy of the VM an administrator left in the export domain, an export domain on a share this
node does not serve, and one staging directory and export domain per data center."""

import io
from pathlib import Path

import ovirtsdk4.types as types
import pytest
from django.test import Client
from django.utils import timezone

from core import roles
from inventory.models import VM, Cluster, DataCenter, StagingShare, StorageDomain
from jobs.models import Job, Node
from jobs.placement import placement_of
from repository.models import BackupDestination, BackupPoint
from strategies.backup import request_backup
from strategies.export_domain import staging_share
from strategies.registry import get_strategy
from tests.helpers import assert_nothing_left_on_engine, backup
from tests.ovirtsim.helpers import wait_for

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def staging(demo_sim, settings) -> Path:
    """This node serves the staging share the demo's export domain is on."""
    settings.EXPORT_STAGING_DIR = demo_sim.state_dir / "exports"
    return settings.EXPORT_STAGING_DIR


def export_domain(conn) -> types.StorageDomain:
    (sd,) = conn.system_service().storage_domains_service().list(search="name=export1")
    return sd


def test_it_leaves_an_administrators_copy_of_the_vm_alone_and_exports_a_clone(manager, destination, demo_sim, staging):
    test01 = VM.objects.get(manager=manager, name="test01")  # down (Development)
    vm_id = str(test01.engine_id)
    with demo_sim.connect() as conn:
        sd = export_domain(conn)
        vms = conn.system_service().vms_service()
        vms.vm_service(vm_id).export(storage_domain=types.StorageDomain(id=sd.id), exclusive=True)
        wait_for(lambda: vms.vm_service(vm_id).get().status == types.VmStatus.DOWN, what="the administrator's export")
        ovf = staging / "Default" / sd.id / "master" / "vms" / vm_id / f"{vm_id}.ovf"
        before = ovf.read_bytes()
        exported = conn.system_service().storage_domains_service().storage_domain_service(sd.id).vms_service()
        try:
            job = backup(test01, destination, strategy="export_domain")
            assert job.status == Job.Status.SUCCEEDED, job.error
            messages = list(job.events.values_list("message", flat=True))
            assert (
                "Export domain export1 holds a copy of VM test01 already; it is left as it is, and a clone of the "
                "snapshot is exported instead"
            ) in messages
            assert any(
                m.startswith(f"VM backup-clone-{job.pk}-test01 exported to export domain export1") for m in messages
            )
            assert ovf.read_bytes() == before  # the administrator's copy, untouched
            assert [v.name for v in exported.list()] == ["test01"]
            point = BackupPoint.objects.get(pk=job.result["point"])
            assert [d.file for d in point.manifest().disks] == [f"{test01.disks.get().engine_id}.raw"]
        finally:
            exported.vm_service(vm_id).remove()
        assert_nothing_left_on_engine(conn, demo_sim, vm_id, set())


def test_it_says_where_the_export_domain_is_when_this_node_does_not_serve_it(
    manager, destination, demo_sim, settings, tmp_path
):
    settings.EXPORT_STAGING_DIR = tmp_path / "staging"
    legacy01 = VM.objects.get(manager=manager, name="legacy01")
    job = backup(legacy01, destination, strategy="export_domain")
    assert job.status == Job.Status.FAILED
    share = demo_sim.state_dir / "exports" / "Default"
    assert job.error.startswith(
        f"Export domain export1 of data center Default is on 127.0.0.1:{share}, not on this node's staging share "
        f"{tmp_path / 'staging' / 'Default'}"
    ), job.error
    with demo_sim.connect() as conn:
        assert_nothing_left_on_engine(conn, demo_sim, str(legacy01.engine_id), set())
        assert not conn.system_service().vms_service().list(search="name=backup-clone-*")


def test_it_maps_each_data_center_to_its_export_domain_and_staging_directory(manager, settings, tmp_path):
    """A second data center: its VMs can use the strategy once an export domain is attached to it,
    on its own directory of the staging share."""
    settings.EXPORT_STAGING_DIR = tmp_path
    strategy = get_strategy("export_domain")
    branch = DataCenter.objects.create(manager=manager, engine_id="d2000000-0000-0000-0000-000000000002", name="Branch")
    cluster = Cluster.objects.create(
        manager=manager, engine_id="c2000000-0000-0000-0000-000000000002", name="Branch-1", data_center=branch
    )
    vm = VM.objects.create(
        manager=manager, engine_id="a2000000-0000-0000-0000-000000000002", name="shop01", cluster=cluster
    )
    assert strategy.vm_blocker(vm, []) == (
        f"no export domain is attached to data center Branch: serve this node's staging share "
        f"({tmp_path / 'Branch'}: manage.py staging_share Branch), create the export domain on it and attach it "
        "to Branch"
    )
    StorageDomain.objects.create(
        manager=manager,
        engine_id="e2000000-0000-0000-0000-000000000002",
        name="export-branch",
        type=StorageDomain.Type.EXPORT,
        data_center=branch,
    )
    assert strategy.vm_blocker(vm, []) == ""
    legacy01 = VM.objects.get(manager=manager, name="legacy01")  # data center Default, export1
    assert strategy.vm_blocker(legacy01, []) == ""
    assert (staging_share("Default"), staging_share("Branch")) == (tmp_path / "Default", tmp_path / "Branch")


def test_it_serves_a_data_centers_staging_directory_over_nfs(manager, settings, tmp_path, make_user):
    """manage.py staging_share: the node's own NFS-Ganesha serves STAGING/DC_NAME to the data
    center's hosts, readable over NFS; --remove stops serving it and keeps its files."""
    import subprocess

    from django.core.management import CommandError, call_command

    from jobs.nfs import node_exporter

    settings.DATA_DIR, settings.EXPORT_STAGING_DIR = tmp_path / "data", tmp_path / "staging"
    settings.NFS_EXPORTER, settings.NFS_ADDRESS, settings.NFS_BIND, settings.NFS_PORT = (
        "ganesha",
        "127.0.0.1",
        "127.0.0.1",
        0,
    )
    with pytest.raises(CommandError, match=r"No data center named 'Nowhere'; the data centers are: Default\."):
        call_command("staging_share", "Nowhere")
    with pytest.raises(CommandError, match=rf"This node \({settings.NODE_NAME}\) has not joined yet"):
        call_command("staging_share", "Default")
    Node.objects.create(name=settings.NODE_NAME, version="test", heartbeat=timezone.now())
    out, share = io.StringIO(), tmp_path / "staging" / "Default"
    try:
        call_command("staging_share", "Default", "--clients", "127.0.0.1", stdout=out)
        (export,) = node_exporter().exports()
        assert out.getvalue().startswith(
            f"Serving {share} as 127.0.0.1:{share} to 127.0.0.1. Create the export domain of data center Default on "
            f"NFS 127.0.0.1:{share}"
        )
        (share / "dom_md").mkdir()
        listed = subprocess.run(["nfs-ls", export.url()], capture_output=True, text=True, check=True).stdout
        assert "dom_md" in listed
        # Recorded: the data center's export domain backups run on this node, and the destinations page says so.
        job = request_backup(
            vm=VM.objects.get(manager=manager, name="web01"),
            origin="cli",
            destination=BackupDestination.objects.create(name="d", path=str(tmp_path)),
            strategy="export_domain",
        )
        where = placement_of(job)
        assert where.node == settings.NODE_NAME
        assert (
            where.says
            == f"serves cluster Production and serves data center Default's staging share (127.0.0.1:{share})"
        )
        job.request_cancel()
        client = Client()
        client.force_login(make_user(roles.VIEWER))
        page = client.get("/destinations/").content.decode()
        assert (
            f"<td>Default</td><td>export1</td>\n      <td>{settings.NODE_NAME}</td><td><code>127.0.0.1:{share}</code>"
            in (page)
        )
        call_command("staging_share", "Default", "--remove", stdout=out)
        assert node_exporter().exports() == []
        assert (share / "dom_md").is_dir()
        assert not StagingShare.objects.exists()
    finally:
        node_exporter().stop()


def test_it_backs_up_through_an_export_domain_on_the_share_this_node_serves_over_nfs(
    manager, destination, demo_sim, settings, tmp_path
):
    """End to end: the node serves Default's staging directory over NFS (its own Ganesha); the engine
    adds an export domain on that share only once it is served (a host mounts it), it replaces export1
    in Default, and a backup of test01 goes through it. export1 is put back."""
    import ovirtsdk4 as sdk
    from django.core.management import call_command

    from jobs.nfs import node_exporter
    from tests.ovirtsim.helpers import download, identical

    settings.DATA_DIR, settings.EXPORT_STAGING_DIR = tmp_path / "data", tmp_path / "staging"
    settings.NFS_EXPORTER, settings.NFS_ADDRESS, settings.NFS_BIND, settings.NFS_PORT = (
        "ganesha",
        "127.0.0.1",
        "127.0.0.1",
        0,
    )
    # The hosts mount in the engine's storage network (as root): the node serves them there.
    settings.NFS_NETNS = demo_sim.storage_netns or ""
    test01 = VM.objects.get(manager=manager, name="test01")
    with demo_sim.connect() as conn:
        system = conn.system_service()
        (dc,) = system.data_centers_service().list(search="name=Default")
        attached = system.data_centers_service().data_center_service(dc.id).storage_domains_service()
        sds = system.storage_domains_service()
        export1 = export_domain(conn)
        name = f"staged-{tmp_path.name[-6:]}".replace("_", "-")

        def add(path: str, port: int) -> types.StorageDomain:
            return sds.add(
                types.StorageDomain(
                    name=name,
                    type=types.StorageDomainType.EXPORT,
                    host=types.Host(name="host1"),
                    storage=types.HostStorage(
                        type=types.StorageType.NFS, address="127.0.0.1", path=path, mount_options=f"port={port}"
                    ),
                )
            )

        staged = None
        Node.objects.create(name=settings.NODE_NAME, version="test", heartbeat=timezone.now())
        try:
            call_command("staging_share", "Default", "--clients", "127.0.0.1", stdout=io.StringIO())
            (export,) = node_exporter().exports()
            assert export.pseudo == str(tmp_path / "staging" / "Default")
            other = tmp_path / "other"
            other.mkdir()
            with pytest.raises(sdk.Error, match=r"Problem while trying to mount target 127\.0\.0\.1:"):
                add(str(other), export.port)  # a directory of this machine nobody serves
            staged = add(export.pseudo, export.port)
            attached.storage_domain_service(export1.id).deactivate()
            attached.storage_domain_service(export1.id).remove()
            attached.add(types.StorageDomain(id=staged.id))
            job = backup(test01, destination, strategy="export_domain")
            assert job.status == Job.Status.SUCCEEDED, job.error
            messages = list(job.events.values_list("message", flat=True))
            root = tmp_path / "staging" / "Default" / staged.id
            assert any(m.endswith(f"exported to export domain {name} ({root})") for m in messages), messages
            point = BackupPoint.objects.get(pk=job.result["point"])
            (entry,) = point.manifest().disks
            now = tmp_path / "test01.raw"  # test01 is down: its disk is what the snapshot held
            download(conn, demo_sim.ca_file, now, disk_id=entry.disk_id, fmt="raw", out_fmt="raw")
            assert identical(point.directory.path / entry.file, now)
            assert list((root / "master" / "vms").iterdir()) == []  # the export was removed
        finally:
            if staged is not None:
                domain = attached.storage_domain_service(staged.id)
                try:
                    domain.deactivate()
                    domain.remove()
                except sdk.NotFoundError:
                    pass
            if export1.id not in {sd.id for sd in attached.list()}:
                attached.add(types.StorageDomain(id=export1.id))
            node_exporter().stop()
        assert_nothing_left_on_engine(conn, demo_sim, str(test01.engine_id), set())


def test_it_uses_each_data_centers_own_export_domain_and_staging_directory(db, tmp_path, settings):
    """Two data centers, two export domains, each on its own directory of the staging share: a VM of
    each is exported to its own data center's domain and read from that directory."""
    from inventory.models import Manager
    from inventory.sync import sync_manager
    from ovirtsim import Simulator
    from tests.ovirtsim.helpers import download, identical

    with Simulator(tmp_path / "engine", seed="two-dcs") as sim:
        settings.EXPORT_STAGING_DIR = sim.state_dir / "exports"
        manager = Manager.objects.create(name="two", **sim.manager_fields)
        sync_manager(manager)
        destination = BackupDestination.objects.create(name="two", path=str(tmp_path / "repo"))
        (tmp_path / "repo").mkdir()
        with sim.connect() as conn:
            domains = {sd.name: sd.id for sd in conn.system_service().storage_domains_service().list()}
            for dc in ("Default", "Branch"):
                vm = VM.objects.get(manager=manager, name=f"web-{dc.lower()}")
                job = backup(vm, destination, strategy="export_domain")
                assert job.status == Job.Status.SUCCEEDED, job.error
                root = settings.EXPORT_STAGING_DIR / dc / domains[f"export-{dc.lower()}"]
                said = list(job.events.values_list("message", flat=True))
                assert f"VM web-{dc.lower()} exported to export domain export-{dc.lower()} ({root})" in said, said
                point = BackupPoint.objects.get(pk=job.result["point"])
                (entry,) = point.manifest().disks
                now = tmp_path / f"{dc}.raw"
                download(conn, sim.ca_file, now, disk_id=entry.disk_id, fmt="raw", out_fmt="raw")
                assert identical(point.directory.path / entry.file, now)
                assert_nothing_left_on_engine(conn, sim, str(vm.engine_id), set())
