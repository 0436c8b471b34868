"""What a host's vdsm writes on a file storage domain, for the restores that write one themselves (a
point into an export domain, an instant restore's temporary data domain): files owned by vdsm:kvm
(36:36), and volume metadata (`VOL_ID.meta`: KEY=VALUE lines, sorted, ended by EOF)."""

import os
from pathlib import Path

from jobs.nfs import KVM_GID, VDSM_UID


def own(path: Path, mode: int) -> None:
    """vdsm:kvm's, as the hosts write a domain's files (only root may give files away)."""
    os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(path, VDSM_UID, KVM_GID)


def make_owned_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    own(path, 0o755)


def volume_meta(fields: dict) -> str:
    """vdsm's metadata of a volume (storage format V5 keys), as its `.meta` file holds it."""
    return "".join(f"{key}={fields[key]}\n" for key in sorted(fields)) + "EOF\n"
