"""Users, roles and permits as the engine exposes and enforces them; hosts' package versions."""

import ovirtsdk4 as sdk
import pytest

from tests.ovirtsim.helpers import add_disk

MiB = 1024**2


def test_it_refuses_what_a_users_roles_do_not_permit_with_the_engines_403(demo_sim, conn):
    demo_sim.add_user("disk-maker", "secret", ["create_disk"])
    user = demo_sim.connect(username="disk-maker@internal", password="secret")
    try:
        system = user.system_service()
        # The user, its role and the role's permits read as on an engine.
        me = system.get().authenticated_user
        (permission,) = system.users_service().user_service(me.id).permissions_service().list()
        permits = system.roles_service().role_service(permission.role.id).permits_service().list()
        assert sorted((p.name, p.id) for p in permits) == [("create_disk", "1100"), ("login", "1300")]
        assert system.users_service().user_service(me.id).get().user_name == "disk-maker@internal-authz"

        disk = add_disk(user, name="made-not-removed", size=MiB, sd_name="data-nfs")
        with pytest.raises(sdk.AuthError) as refused:
            system.disks_service().disk_service(disk.id).remove()
        assert refused.value.code == 403
        assert refused.value.fault.reason == "Operation Failed"
        assert (
            refused.value.fault.detail == "[Cannot remove Virtual Disk. User is not authorized to perform this action.]"
        )
    finally:
        user.close()
    conn.system_service().disks_service().disk_service(disk.id).remove()  # the admin may


def test_it_reports_each_hosts_vdsm_and_libvirt_as_the_api_does(demo_sim, conn):
    demo_sim.set_host_versions("host2", vdsm="4.40.100.2-1.el8", libvirt="7.0.0-14.el8")
    try:
        (host,) = conn.system_service().hosts_service().list(search="name=host2")
    finally:
        demo_sim.set_host_versions("host2", vdsm="4.50.5.1-1.el9", libvirt="9.0.0-10.el9")
    vdsm, libvirt = host.version, host.libvirt_version
    assert (vdsm.major, vdsm.minor, vdsm.build, vdsm.revision, vdsm.full_version) == (
        4,
        40,
        100,
        2,
        "vdsm-4.40.100.2-1.el8",
    )
    assert (libvirt.major, libvirt.minor, libvirt.build, libvirt.full_version) == (7, 0, 0, "libvirt-7.0.0-14.el8")
