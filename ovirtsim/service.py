"""Everything one simulated engine needs, started and stopped together."""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ovirtsim import storage_net
from ovirtsim.engine import Engine
from ovirtsim.hosts_ssh import Hosts
from ovirtsim.imageio import ImageioDaemon
from ovirtsim.pki import PKI
from ovirtsim.seed import get_seed
from ovirtsim.server import EngineHTTPServer

log = logging.getLogger("ovirtsim")


class EngineService:
    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: str = "demo",
        ssh_port: int | None = None,
    ):
        get_seed(seed)  # refuse an unknown seed before starting anything
        self.dir = Path(state_dir).resolve()
        self.host = host
        self.port = port
        self.seed = seed
        self.ssh_port = ssh_port  # the hosts' sshd port; None picks a free one per host
        self.pki = PKI(self.dir / "pki")
        self.imageio: ImageioDaemon | None = None  # the hosts' daemon (transfer_url)
        self.imageio_proxy: ImageioDaemon | None = None  # the engine's imageio proxy (proxy_url)
        self.engine: Engine | None = None
        self.http: EngineHTTPServer | None = None
        self.run_dir: Path | None = None
        # The hosts' storage network (a network namespace's file; None when not root): storage_net.py.
        self.storage_netns: Path | None = None

    @property
    def info_file(self) -> Path:
        return self.dir / "engine.json"

    def start(self) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.info_file.unlink(missing_ok=True)
        self.run_dir = Path(tempfile.mkdtemp(prefix="ovirtsim-"))
        self.pki.ensure()
        self.imageio = ImageioDaemon(
            self.dir,
            cert_file=self.pki.cert_file,
            key_file=self.pki.key_file,
            ca_file=self.pki.ca_file,
            host=self.host,
            run_dir=self.run_dir / "imageio",
        )
        try:
            self.storage_netns = storage_net.start(self.dir)
            # The engine's own imageio daemon, on the engine's address and its own port.
            self.imageio_proxy = ImageioDaemon(
                self.dir,
                cert_file=self.pki.cert_file,
                key_file=self.pki.key_file,
                ca_file=self.pki.ca_file,
                host=self.host,
                run_dir=self.run_dir / "imageio-proxy",
                name="imageio-proxy",
            )
            for daemon in (self.imageio, self.imageio_proxy):
                daemon.launch()
            for daemon in (self.imageio, self.imageio_proxy):
                daemon.wait_ready()
            self.engine = Engine(
                self.dir, imageio=self.imageio, imageio_proxy=self.imageio_proxy, run_dir=self.run_dir / "nbd"
            )
            self.engine.storage_netns = self.storage_netns
            self.engine.lvm.start()
            self.engine.ensure_volume_groups()
            if not self.engine.store.meta.get("seeded"):
                get_seed(self.seed)(self.engine)
                self.engine.store.meta["seeded"] = self.seed
                self.engine.store.save()
            self.engine.recover()
            self.engine.start_vm_qemus()
            self.engine.hosts_ssh = Hosts(self.engine, self.dir, self.run_dir / "sshd", port=self.ssh_port)
            self.engine.hosts_ssh.start()
            self.engine.start_monitor()
            self.http = EngineHTTPServer(
                (self.host, self.port),
                self.engine,
                cert_file=str(self.pki.cert_file),
                key_file=str(self.pki.key_file),
                ca_file=str(self.pki.ca_file),
            )
            self.http.serve_in_thread()
        except BaseException:
            self.stop()
            raise
        port = self.http.server_address[1]
        info = {
            "url": f"https://{self.host}:{port}",
            "api_url": f"https://{self.host}:{port}/ovirt-engine/api",
            "username": "admin@internal",
            "password": self.engine.password,
            "ca_file": str(self.pki.ca_file),
            "imageio_port": self.imageio.port,
            "imageio_proxy_port": self.imageio_proxy.port,
            "hosts": self.engine.hosts_ssh.info(),
            # Each export domain's share root (its domain is the SD_ID directory in it).
            "export_domain_dirs": self.engine.export_domain_dirs(),
            # The VMs running here (backup proxies): where each one's guest /dev/disk/by-id is.
            "proxy_device_dirs": self.engine.proxy_device_dirs(),
            # Where the hosts do NFS (their qemu's nfs driver, their mounts): a node serving them runs its
            # NFS server in it (NFS_NETNS). None when the simulator does not run as root.
            "storage_netns": str(self.storage_netns) if self.storage_netns else None,
            "pid": os.getpid(),
        }
        tmp = self.info_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f, indent=2)
        os.replace(tmp, self.info_file)
        log.info("ovirtsim engine ready at %s", info["api_url"])
        return info

    def stop(self) -> None:
        if self.http:
            self.http.shutdown()
            self.http.server_close()
            self.http = None
        if self.engine:
            if getattr(self.engine, "hosts_ssh", None):
                self.engine.hosts_ssh.stop()
            self.engine.stop()
            self.engine.store.save()
            self.engine = None
        for daemon in (self.imageio_proxy, self.imageio):
            if daemon:
                daemon.stop()
        self.imageio = self.imageio_proxy = None
        storage_net.stop(self.dir)
        self.storage_netns = None
        if self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None
        self.info_file.unlink(missing_ok=True)
