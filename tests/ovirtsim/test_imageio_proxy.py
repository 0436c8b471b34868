"""The engine's imageio proxy: `proxy_url` is the engine's own imageio daemon, a different endpoint
from the host's (`transfer_url`); with the hosts unreachable from clients only the proxy serves."""

import socket
import subprocess
from urllib.parse import urlparse

import pytest
from ovirt_imageio import client
from ovirt_imageio._internal import http

from tests.ovirtsim.helpers import MiB, add_disk, end_transfer, identical, make_image, start_transfer


@pytest.fixture
def hosts_unreachable(demo_sim):
    demo_sim.set_hosts_reachable(False)
    try:
        yield
    finally:
        demo_sim.set_hosts_reachable(True)


def test_it_serves_a_transfer_through_the_engines_proxy_when_hosts_are_unreachable(
    demo_sim, conn, hosts_unreachable, tmp_path
):
    disk = add_disk(conn, name="through_proxy", size=16 * MiB, fmt="cow", sd_name="data-nfs")
    demo_sim.guest_write(disk.id, 3 * MiB, b"\x95" * (2 * MiB))
    expected = tmp_path / "expected.raw"
    make_image(expected, size=16 * MiB, writes=[(0x95, 3 * MiB, 2 * MiB)], fmt="raw")
    try:
        transfer = start_transfer(conn, disk_id=disk.id, fmt="raw")
        host, proxy = urlparse(transfer.transfer_url), urlparse(transfer.proxy_url)
        address = next(h["address"] for h in demo_sim.hosts() if h["id"] == transfer.host.id)
        assert host.hostname == address and proxy.hostname == urlparse(demo_sim.url).hostname
        assert host.port != proxy.port
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host.hostname, host.port), timeout=5).close()
        out = tmp_path / "through-proxy.qcow2"
        client.download(transfer.proxy_url, str(out), demo_sim.ca_file, fmt="qcow2")
        assert identical(expected, out)
        end_transfer(conn, transfer)
        # The transfer's end removes the proxy's ticket as well as the host's.
        with pytest.raises(http.Error, match="No such ticket") as gone:
            client.download(transfer.proxy_url, str(tmp_path / "after.qcow2"), demo_sim.ca_file)
        assert gone.value.code == 403

        # ovirt-img, unchanged, falls back to the proxy by itself.
        result = subprocess.run(
            demo_sim.ovirt_img("download-disk", "-f", "qcow2", disk.id, str(tmp_path / "ovirt-img.qcow2")),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert identical(expected, tmp_path / "ovirt-img.qcow2")
    finally:
        conn.system_service().disks_service().disk_service(disk.id).remove()
