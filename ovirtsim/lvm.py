"""Block storage domains as real LVM: a volume group per domain on a loop device, an LV per volume.

The layout follows vdsm's block domains: the VG is named by the storage domain id, each volume is
an LV named by its volume id and tagged `IU_<image id>`, `PU_<parent volume id>` (the blank uuid for
a base volume) and `MD_<slot>` (its slot in the domain's `metadata` LV, where vdsm keeps the
volume's KEY=VALUE metadata); LVs are made inactive, without zeroing and without metadata backups,
as vdsm's `lvcreate --autobackup n` does, with vdsm's 128 MiB extents.

Each VG sits on a sparse file `STATE/lvm/pv/VG.img`, attached as a loop device (the PV). The LVM
configuration is private (`STATE/lvm/etc/lvm.conf`, passed as LVM_SYSTEM_DIR): no udev, no
device-mapper (activation=0), no backups or archives under /etc, and a filter that accepts only
our own PV loop devices, so neither other LVM users on the machine nor the guests' own PVs
inside our LVs are scanned (vdsm filters for the same reason).

This kernel has no device-mapper, so activation is what stands in for it: a loop device over the
PV file at the LV's extent range (`--offset pe_start + first_pe * extent_size --sizelimit
extents * extent_size`), for single-segment LVs only. Activation is per host, as on a real
cluster: LV `VG/LV` active on host H is the block device node `STATE/lvm/hosts/H/dev/VG/LV`
(hosts see that directory as `/dev/VG`). Who holds an activation is recorded (`engine:...` for
the simulator's own users, `manual` for an administrator's `lvchange -ay`), so the engine only
deactivates what it activated and `lvchange -an` refuses an LV the engine uses. The state lives in
files under a file lock, because `lvchange` run over SSH on a host changes it from another process.

The hosts' own LVM commands read another configuration (`STATE/lvm/host-etc`), as
`vdsm-tool config-lvm-filter` leaves an oVirt host: its filter hides the storage domains' devices,
so a plain `lvs`/`lvchange` there does not see their VGs; vdsm, and anyone else acting on a
domain's LVs, passes `--config 'devices { filter=[...] }'` naming the domain's devices.

Loop devices are machine-wide: numbers are never assumed; everything attached over our own files
is found again with `losetup -j FILE` and detached on stop and on the next start after a crash.
"""

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

MiB = 1024**2
GiB = 1024**3
EXTENT_SIZE = 128 * MiB  # vdsm's VG_EXTENT_SIZE_MB
MAX_PV_SIZE = 1024 * GiB  # the backing file is sparse, but a bad capacity must not make a huge one
BLANK_UUID = "00000000-0000-0000-0000-000000000000"
TAG_UNINIT = "OVIRT_VOL_INITIALIZING"
METADATA_LV = "metadata"
# Storage format V5: volume metadata slots of 8 KiB after the first MiB of the metadata LV.
METADATA_BASE = MiB
METADATA_SLOT_SIZE = 8192
MANUAL = "manual"


class LvmError(RuntimeError):
    pass


def _round_up(n: int, unit: int) -> int:
    return (n + unit - 1) // unit * unit


def lv_size_for(capacity: int, fmt: str) -> int:
    """The LV size of a volume: RAW is the capacity; QCOW2 gets room for its metadata too.

    vdsm creates thin QCOW2 LVs small and extends them as the guest writes; here they are created
    at the size vdsm would extend them to at most (capacity * 1.1), so no write ever waits for an
    extension. The PV file is sparse, so the unwritten part costs nothing.
    """
    size = capacity if fmt == "raw" else capacity + capacity // 10
    return _round_up(max(size, 1), EXTENT_SIZE)


class Lvm:
    """The simulator's LVM: its VGs, LVs, and their activations on each host."""

    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir).resolve() / "lvm"
        self.conf_dir = self.dir / "etc"
        self.host_conf_dir = self.dir / "host-etc"  # what the hosts' own LVM commands read
        self.pv_dir = self.dir / "pv"
        self.hosts_dir = self.dir / "hosts"
        self.state_file = self.dir / "activations.json"
        # What never changes while a VG lives, asked of LVM once per VG and process: each LVM command
        # costs tens of milliseconds, and every activation and metadata write needs these.
        self._geometry: dict[str, tuple[int, int]] = {}  # VG -> (pe_start, extent_size)
        self._metadata_range: dict[str, tuple[int, int]] = {}  # VG -> its metadata LV's (offset, length)

    # ----- plumbing --------------------------------------------------------------------

    @property
    def env(self) -> dict:
        """The environment an LVM command of ours runs in (also what a host's shell gets)."""
        return os.environ | {"LVM_SYSTEM_DIR": str(self.conf_dir), "LVM_SUPPRESS_FD_WARNINGS": "1"}

    @property
    def host_env(self) -> dict:
        """The environment of an LVM command run in a host's shell: the host's own configuration."""
        return os.environ | self.host_environment()

    def run(self, *args: str) -> str:
        if shutil.which(args[0]) is None and not Path(f"/sbin/{args[0]}").exists():
            raise LvmError(f"{args[0]} is not installed (Debian package lvm2)")
        result = subprocess.run(args, capture_output=True, text=True, env=self.env, timeout=120)
        if result.returncode != 0:
            errors = [
                line.strip()
                for line in result.stderr.splitlines()
                if line.strip() and not line.strip().startswith("WARNING:")
            ]
            raise LvmError(f"{' '.join(args)} failed: {' '.join(errors) or result.stdout.strip()}")
        return result.stdout

    @contextlib.contextmanager
    def _locked(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _load(self) -> dict:
        try:
            state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            state = {}
        state.setdefault("active", {})
        state.setdefault("locked_elsewhere", {})
        return state

    def _save(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.state_file)

    def pv_file(self, vg: str) -> Path:
        return self.pv_dir / f"{vg}.img"

    def _write_config(self) -> None:
        pvs = sorted(self._pv_loops().values())
        accept = "".join(f'"a|^{re.escape(dev)}$|",' for dev in pvs)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.host_conf_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "lock").mkdir(parents=True, exist_ok=True)
        # hints="none": LVM's scan hints are one file for the whole machine (/run/lvm/hints), which
        # other simulators and commands with other filters rewrite under us (vdsm turns them off too).
        common = (
            f'global {{ activation=0 use_lvmpolld=0 locking_dir="{self.dir / "lock"}" }}\n'
            "activation { udev_sync=0 udev_rules=0 monitoring=0 }\n"
            "backup { backup=0 archive=0 }\n"
        )
        engine = (
            "# ovirtsim's private LVM configuration (LVM_SYSTEM_DIR): our PV loop devices only,\n"
            "# no udev, no device-mapper, no metadata backups.\n"
            f'devices {{ filter=[{accept}"r|.*|"] global_filter=[{accept}"r|.*|"] use_devicesfile=0 hints="none" '
            "obtain_device_list_from_udev=0 }\n" + common
        )
        # A host as `vdsm-tool config-lvm-filter` leaves it: LVM's filter accepts only the host's own
        # local devices (none here), so plain lvs/lvchange do not see the storage domains' VGs and
        # cannot activate a guest's LVs behind vdsm's back; vdsm (and whoever else acts on a domain's
        # LVs) names the domain's devices in its own `--config 'devices { filter=[...] }'`. The
        # global filter stands for the devices that exist on this host at all: our PVs.
        host = (
            "# ovirtsim: a host's LVM configuration, as vdsm-tool config-lvm-filter leaves it: storage\n"
            "# domain devices are hidden; pass --config 'devices { filter=[...] }' naming them, as vdsm does.\n"
            f'devices {{ filter=["r|.*|"] global_filter=[{accept}"r|.*|"] use_devicesfile=0 hints="none" '
            "obtain_device_list_from_udev=0 }\n" + common
        )
        for directory, text in ((self.conf_dir, engine), (self.host_conf_dir, host)):
            tmp = directory / "lvm.conf.tmp"
            tmp.write_text(text)
            os.replace(tmp, directory / "lvm.conf")

    def _pv_loops(self) -> dict[str, str]:
        """VG name -> the loop device its PV file is attached to (attached ones only)."""
        found = {}
        if self.pv_dir.is_dir():
            for pv in sorted(self.pv_dir.glob("*.img")):
                for dev, offset, _ in _loops_over(pv):
                    if offset == 0:
                        found[pv.stem] = dev
                        break
        return found

    # ----- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        """Attach every VG's PV; activations do not survive a stop or a crash (as after a reboot)."""
        with self._locked():
            self._detach_all()
            for pv in sorted(self.pv_dir.glob("*.img")) if self.pv_dir.is_dir() else []:
                _losetup("--show", "-f", str(pv))
            self._write_config()

    def stop(self) -> None:
        with self._locked():
            self._detach_all()
            self._write_config()

    def _detach_all(self) -> None:
        if self.pv_dir.is_dir():
            for pv in self.pv_dir.glob("*.img"):
                for dev, _, _ in _loops_over(pv):
                    _detach(dev)
        shutil.rmtree(self.hosts_dir, ignore_errors=True)
        state = self._load()
        state["active"] = {}
        self._save(state)

    # ----- volume groups ---------------------------------------------------------------

    def create_vg(self, vg: str, size: int, *, tags: tuple[str, ...] = ()) -> None:
        """A VG named `vg` on a new sparse PV file of `size` bytes, with vdsm's metadata LV."""
        size = min(max(size, 4 * EXTENT_SIZE), MAX_PV_SIZE)
        with self._locked():
            pv = self.pv_file(vg)
            if pv.exists():
                raise LvmError(f"Volume group {vg} already exists")
            self.pv_dir.mkdir(parents=True, exist_ok=True)
            with open(pv, "wb") as f:
                f.truncate(size)
            dev = _losetup("--show", "-f", str(pv))
            try:
                self._write_config()
                self.run("pvcreate", "-q", dev)
                args = ["vgcreate", "-q", "--physicalextentsize", f"{EXTENT_SIZE // MiB}m"]
                for tag in tags:
                    args += ["--addtag", tag]
                self.run(*args, vg, dev)
            except BaseException:
                _detach(dev)
                pv.unlink(missing_ok=True)
                self._write_config()
                raise
        self.create_lv(vg, METADATA_LV, EXTENT_SIZE)

    def remove_vg(self, vg: str) -> None:
        self._geometry.pop(vg, None)
        self._metadata_range.pop(vg, None)
        with self._locked():
            state = self._load()
            for host in state["active"].values():
                for key in [k for k in host if k.split("/")[0] == vg]:
                    _detach(host.pop(key)["loop"])
            self._save(state)
            pv = self.pv_file(vg)
            with contextlib.suppress(LvmError):
                self.run("vgremove", "-f", "-q", vg)
            for dev, _, _ in _loops_over(pv):
                _detach(dev)
            pv.unlink(missing_ok=True)
            self._write_config()
            for host_dir in self.hosts_dir.glob(f"*/dev/{vg}") if self.hosts_dir.is_dir() else []:
                shutil.rmtree(host_dir, ignore_errors=True)

    def vgs(self) -> list[str]:
        return sorted(self._pv_loops())

    def vg_info(self, vg: str) -> dict:
        """{"extent_size", "pe_start", "free", "size", "pv"} in bytes."""
        rows = _report(
            self.run(
                "pvs",
                "--reportformat",
                "json",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "pv_name,pe_start,vg_name,vg_extent_size,vg_free,vg_size",
                "--select",
                f"vg_name={vg}",
            ),
            "pv",
        )
        if not rows:
            raise LvmError(f'Volume group "{vg}" not found')
        row = rows[0]
        return {
            "pv": row["pv_name"],
            "pe_start": int(row["pe_start"]),
            "extent_size": int(row["vg_extent_size"]),
            "free": int(row["vg_free"]),
            "size": int(row["vg_size"]),
        }

    # ----- logical volumes -------------------------------------------------------------

    def create_lv(self, vg: str, lv: str, size: int, *, tags: tuple[str, ...] = ()) -> int:
        """An inactive LV of at least `size` bytes (rounded up to extents), not zeroed; returns its size."""
        args = ["lvcreate", "-q", "--autobackup", "n", "--activate", "n", "--zero", "n", "--contiguous", "n"]
        args += ["--size", f"{_round_up(size, MiB) // MiB}m"]
        for tag in tags:
            args += ["--addtag", tag]
        self.run(*args, "--name", lv, vg)
        # A reused extent range must not show an earlier volume's data (the file is sparse:
        # punching the range costs nothing and reads back as zeros).
        return self._punch(vg, lv)

    def extend_lv(self, vg: str, lv: str, size: int) -> None:
        """Grow the LV to `size` bytes (rounded up to extents); it must be inactive everywhere.

        vdsm extends active LVs and refreshes their mapping; a loop device cannot move its end, so
        here the LV is extended while inactive (the engine allocates QCOW2 LVs at full size and never
        needs to extend an active one).
        """
        if self.lv(vg, lv)["size"] >= size:
            return
        hosts = self.active_on(vg, lv)
        if hosts:
            raise LvmError(f"Cannot extend LV {vg}/{lv} while it is active (on {', '.join(hosts)})")
        self.run("lvextend", "-q", "--autobackup", "n", "--size", f"{_round_up(size, MiB) // MiB}m", f"{vg}/{lv}")

    def remove_lv(self, vg: str, lv: str) -> None:
        """Remove the LV; stale activations of it on any host are torn down (vdsm removes with -f)."""
        with self._locked():
            state = self._load()
            for host_id, host in state["active"].items():
                entry = host.pop(f"{vg}/{lv}", None)
                if entry:
                    _detach(entry["loop"])
                    self._node(host_id, vg, lv).unlink(missing_ok=True)
            self._save(state)
        with contextlib.suppress(LvmError):
            self._punch(vg, lv)
        self.run("lvremove", "-q", "-f", "--autobackup", "n", f"{vg}/{lv}")

    def change_tags(self, vg: str, lv: str, *, add: tuple[str, ...] = (), delete: tuple[str, ...] = ()) -> None:
        args = ["lvchange", "-q", "--autobackup", "n"]
        for tag in delete:
            args += ["--deltag", tag]
        for tag in add:
            args += ["--addtag", tag]
        self.run(*args, f"{vg}/{lv}")

    def lvs(self, vg: str | None = None) -> list[dict]:
        """[{"vg", "name", "size", "tags", "segments"}], as LVM reports them."""
        args = ["lvs", "--reportformat", "json", "--units", "b", "--nosuffix"]
        args += ["-o", "vg_name,lv_name,lv_size,lv_tags,seg_count"]
        if vg:
            args.append(vg)
        rows = _report(self.run(*args), "lv")
        return [
            {
                "vg": r["vg_name"],
                "name": r["lv_name"],
                "size": int(r["lv_size"]),
                "tags": [t for t in r["lv_tags"].split(",") if t],
                "segments": int(r["seg_count"]),
            }
            for r in rows
        ]

    def lv(self, vg: str, lv: str) -> dict:
        found = [x for x in self.lvs(vg) if x["name"] == lv]
        if not found:
            raise LvmError(f'Failed to find logical volume "{vg}/{lv}"')
        return found[0]

    def _extent_range(self, vg: str, lv: str) -> tuple[int, int]:
        """(offset, length) in bytes of the LV in its PV file; single-segment LVs only."""
        rows = _report(
            self.run(
                "lvs",
                "--segments",
                "--reportformat",
                "json",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "lv_name,seg_pe_ranges",
                f"{vg}/{lv}",
            ),
            "seg",
        )
        if not rows:
            raise LvmError(f'Failed to find logical volume "{vg}/{lv}"')
        if len(rows) != 1 or " " in rows[0]["seg_pe_ranges"].strip():
            raise LvmError(
                f"LV {vg}/{lv} has {len(rows)} segments; this simulator activates an LV as one loop "
                "device over one extent range, so it cannot activate it"
            )
        match = re.fullmatch(r"(\S+):(\d+)-(\d+)", rows[0]["seg_pe_ranges"].strip())
        if not match:
            raise LvmError(f"Unexpected extent range {rows[0]['seg_pe_ranges']!r} of LV {vg}/{lv}")
        if vg not in self._geometry:
            info = self.vg_info(vg)
            self._geometry[vg] = (info["pe_start"], info["extent_size"])
        pe_start, extent_size = self._geometry[vg]
        first, last = int(match[2]), int(match[3])
        return pe_start + first * extent_size, (last - first + 1) * extent_size

    def _metadata_extent_range(self, vg: str) -> tuple[int, int]:
        """The metadata LV's (offset, length): made with the VG, never extended nor moved."""
        if vg not in self._metadata_range:
            self._metadata_range[vg] = self._extent_range(vg, METADATA_LV)
        return self._metadata_range[vg]

    def _punch(self, vg: str, lv: str) -> int:
        """Zero the LV's extents (a hole in the PV file); returns the LV's size."""
        offset, length = self._extent_range(vg, lv)
        subprocess.run(
            ["fallocate", "--punch-hole", "--keep-size", "-o", str(offset), "-l", str(length), str(self.pv_file(vg))],
            check=True,
            capture_output=True,
        )
        return length

    # ----- vdsm's volume metadata ------------------------------------------------------

    def free_metadata_slot(self, vg: str) -> int:
        used = {int(t[3:]) for x in self.lvs(vg) for t in x["tags"] if t.startswith("MD_") and t[3:].isdigit()}
        # Slot 0 is vdsm's domain metadata; volumes start at 4 as the domain's own LVs take 0-3.
        return next(n for n in range(4, 10**6) if n not in used)

    def write_metadata(self, vg: str, slot: int, fields: dict | None) -> None:
        """Write (or clear, with None) a volume's KEY=VALUE block in the metadata LV's slot."""
        offset, length = self._metadata_extent_range(vg)
        position = METADATA_BASE + slot * METADATA_SLOT_SIZE
        if position + METADATA_SLOT_SIZE > length:
            raise LvmError(f"Metadata slot {slot} is outside the metadata LV of {vg}")
        text = "" if fields is None else "".join(f"{k}={fields[k]}\n" for k in sorted(fields)) + "EOF\n"
        block = text.encode().ljust(METADATA_SLOT_SIZE, b"\0")
        fd = os.open(self.pv_file(vg), os.O_WRONLY)
        try:
            os.pwrite(fd, block, offset + position)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_metadata(self, vg: str, slot: int) -> dict:
        offset, _ = self._metadata_extent_range(vg)
        with open(self.pv_file(vg), "rb") as f:
            f.seek(offset + METADATA_BASE + slot * METADATA_SLOT_SIZE)
            text = f.read(METADATA_SLOT_SIZE).split(b"\0", 1)[0].decode()
        fields = {}
        for line in text.splitlines():
            if line == "EOF":
                break
            key, _, value = line.partition("=")
            fields[key] = value
        return fields

    # ----- activation ------------------------------------------------------------------

    def host_dev_dir(self, host_id: str) -> Path:
        """What host `host_id` sees as /dev: `VG/LV` device nodes of the LVs active there."""
        return self.hosts_dir / host_id / "dev"

    def _node(self, host_id: str, vg: str, lv: str) -> Path:
        return self.host_dev_dir(host_id) / vg / lv

    def lv_path(self, host_id: str, vg: str, lv: str) -> Path:
        return self._node(host_id, vg, lv)

    def is_active(self, host_id: str, vg: str, lv: str) -> bool:
        with self._locked():
            return f"{vg}/{lv}" in self._load()["active"].get(host_id, {})

    def holders(self, host_id: str, vg: str, lv: str) -> list[str]:
        with self._locked():
            entry = self._load()["active"].get(host_id, {}).get(f"{vg}/{lv}")
            return list(entry["holders"]) if entry else []

    def active_on(self, vg: str, lv: str) -> list[str]:
        """The hosts where the LV is active."""
        with self._locked():
            return sorted(h for h, lvs in self._load()["active"].items() if f"{vg}/{lv}" in lvs)

    def activate(self, host_id: str, vg: str, lv: str, *, holder: str = MANUAL) -> Path:
        """Activate the LV on the host for `holder` (idempotent per holder); returns its device node."""
        key = f"{vg}/{lv}"
        with self._locked():
            state = self._load()
            elsewhere = state["locked_elsewhere"].get(key)
            if elsewhere and elsewhere != host_id:
                # What lvmlockd answers when another host holds the LV's lock (a VG shared by a cluster).
                raise LvmError(f"LV locked by other host: {key}. Failed to lock logical volume {key}.")
            host = state["active"].setdefault(host_id, {})
            entry = host.get(key)
            if entry is None:
                offset, length = self._extent_range(vg, lv)
                loop = _losetup(
                    "--show", "-f", "--offset", str(offset), "--sizelimit", str(length), str(self.pv_file(vg))
                )
                node = self._node(host_id, vg, lv)
                try:
                    node.parent.mkdir(parents=True, exist_ok=True)
                    node.unlink(missing_ok=True)
                    os.mknod(node, stat.S_IFBLK | 0o660, os.stat(loop).st_rdev)
                except BaseException:
                    _detach(loop)
                    raise
                entry = host[key] = {"loop": loop, "offset": offset, "size": length, "holders": []}
            if holder not in entry["holders"]:
                entry["holders"].append(holder)
            self._save(state)
            return self._node(host_id, vg, lv)

    def deactivate(self, host_id: str, vg: str, lv: str, *, holder: str = MANUAL) -> None:
        """Release `holder`'s activation; the LV goes inactive when nobody holds it any more.

        A manual deactivation (`lvchange -an`) of an LV the engine holds (a running VM, a transfer)
        is refused as LVM refuses an open LV.
        """
        key = f"{vg}/{lv}"
        with self._locked():
            state = self._load()
            host = state["active"].get(host_id, {})
            entry = host.get(key)
            if entry is None:
                return
            others = [h for h in entry["holders"] if h != holder]
            if holder == MANUAL and others:
                raise LvmError(f"Logical volume {key} in use.")
            entry["holders"] = others
            if not others:
                self._node(host_id, vg, lv).unlink(missing_ok=True)
                _detach(entry["loop"])
                del host[key]
            self._save(state)

    def held_by(self, holder: str) -> list[tuple[str, str, str]]:
        """(host, vg, lv) of every activation `holder` holds."""
        with self._locked():
            active = self._load()["active"]
        return [(h, *k.split("/")) for h, lvs in active.items() for k, e in lvs.items() if holder in e["holders"]]

    def release_holder(self, holder: str) -> None:
        """Drop `holder` from every activation (a VM that stopped, a transfer that ended)."""
        with self._locked():
            state = self._load()
            keys = [(h, k) for h, lvs in state["active"].items() for k, e in lvs.items() if holder in e["holders"]]
        for host_id, key in keys:
            vg, lv = key.split("/")
            self.deactivate(host_id, vg, lv, holder=holder)

    def set_locked_elsewhere(self, vg: str, lv: str, host_name: str | None) -> None:
        """Fault switch: another host (not one of ours) holds the LV active; None clears it."""
        with self._locked():
            state = self._load()
            if host_name:
                state["locked_elsewhere"][f"{vg}/{lv}"] = host_name
            else:
                state["locked_elsewhere"].pop(f"{vg}/{lv}", None)
            self._save(state)

    def attached_loops(self) -> list[str]:
        """Every loop device over our PV files (tests check that none is left)."""
        if not self.pv_dir.is_dir():
            return []
        return sorted(dev for pv in self.pv_dir.glob("*.img") for dev, _, _ in _loops_over(pv))

    # ----- a host's view (its sshd's mount namespace) ----------------------------------

    WRAPPED = ("lvs", "lvchange", "vgs", "pvs", "lvdisplay", "lvscan")

    def host_environment(self) -> dict:
        """What a login on a host gets in its environment (sshd's SetEnv): LVM's private configuration."""
        return {"LVM_SYSTEM_DIR": str(self.host_conf_dir), "LVM_SUPPRESS_FD_WARNINGS": "1"}

    def host_setup_script(self, host_id: str, scratch: Path) -> list[str]:
        """Shell lines, run in a host's new private mount namespace, that give it its own /dev: the
        usual character devices, /dev/pts and /dev/shm, the loop devices of our PVs, and `/dev/VG`
        for each VG, showing the LVs active on this host; and `lvs`/`lvchange`/... in
        /usr/local/sbin (first in sshd's PATH) that answer for this host.

        The wrappers run in the simulator's own mount namespace (nsenter), where new loop devices
        appear: the host's /dev is a private tmpfs that would not show them.
        """
        scratch = Path(scratch)
        dev, sbin = scratch / "dev", scratch / "sbin"
        dev.mkdir(parents=True, exist_ok=True)
        sbin.mkdir(parents=True, exist_ok=True)
        repo = Path(__file__).resolve().parent.parent
        for name in self.WRAPPED:
            wrapper = sbin / name
            wrapper.write_text(
                "#!/bin/sh\n"
                f"# ovirtsim: {name} as host {host_id} sees it (activation is the simulator's, see ovirtsim/lvm.py)\n"
                f"exec nsenter --mount=/proc/{os.getpid()}/ns/mnt -- env PYTHONPATH={shlex.quote(str(repo))} "
                f"{shlex.quote(sys.executable)} -m ovirtsim.lvm --state-dir {shlex.quote(str(self.dir.parent))} "
                f'--host {shlex.quote(host_id)} {name} "$@"\n'
            )
            wrapper.chmod(0o755)
        q = shlex.quote
        lines = [
            f"mount -t tmpfs -o mode=0755 hostdev {q(str(dev))}",
            "for n in null zero full random urandom tty ptmx fuse kvm loop-control; do"
            f" if [ -e /dev/$n ]; then cp -a /dev/$n {q(str(dev))}/; fi; done",
            f"for n in /dev/loop[0-9]*; do if [ -b $n ]; then cp -a $n {q(str(dev))}/; fi; done",
            f"ln -s /proc/self/fd {q(str(dev / 'fd'))}",
            f"ln -s /proc/self/fd/0 {q(str(dev / 'stdin'))}",
            f"ln -s /proc/self/fd/1 {q(str(dev / 'stdout'))}",
            f"ln -s /proc/self/fd/2 {q(str(dev / 'stderr'))}",
            f"mkdir {q(str(dev / 'pts'))} {q(str(dev / 'shm'))} {q(str(dev / 'mapper'))}",
            f"mount --bind /dev/pts {q(str(dev / 'pts'))}",
            f"mount --bind /dev/shm {q(str(dev / 'shm'))}",
        ]
        for vg in self.vgs():
            target = self.host_dev_dir(host_id) / vg
            target.mkdir(parents=True, exist_ok=True)
            lines.append(f"ln -s {q(str(target))} {q(str(dev / vg))}")
        lines += [f"mount --move {q(str(dev))} /dev", f"mount --bind {q(str(sbin))} /usr/local/sbin"]
        return lines

    # ----- what a host's shell runs ----------------------------------------------------

    def host_command(self, host_id: str, argv: list[str]) -> int:
        """`lvs`, `lvchange -ay|-an VG/LV` and other LVM commands as run in a host's shell.

        Activation changes go to the simulator's records (LVM itself cannot activate here);
        reports show each LV's activation on this host in `lv_attr` (a, o) and `lv_active`.
        """
        name = Path(argv[0]).name
        args = argv[1:]
        if name == "lvchange" and any(a.startswith(("-a", "--activate")) for a in args):
            return self._host_lvchange(host_id, args)
        if name in ("lvs", "lvdisplay", "lvm", "vgs", "pvs", "lvscan", "lvchange"):
            result = subprocess.run([name, *args], capture_output=True, text=True, env=self.host_env)
            out = result.stdout
            if name == "lvs":
                out = self._mark_active(host_id, out)
            sys.stdout.write(out)
            sys.stderr.write(
                "".join(line + "\n" for line in result.stderr.splitlines() if "Activation disabled" not in line)
            )
            return result.returncode
        sys.stderr.write(f"{name}: not available on this simulated host\n")
        return 2

    def _host_lvchange(self, host_id: str, args: list[str]) -> int:
        mode, names, config = None, [], []
        it = iter(args)
        for a in it:
            if a in ("-a", "--activate"):
                mode = next(it, "")
            elif a.startswith("--activate="):
                mode = a.split("=", 1)[1]
            elif a.startswith("-a") and len(a) > 2:
                mode = a[2:]
            elif a in ("--config", "--devices", "--devicesfile"):
                config += [a, next(it, "")]
            elif a.startswith(("--config=", "--devices=", "--devicesfile=")):
                config.append(a)
            elif not a.startswith("-"):
                names.append(a.removeprefix("/dev/"))
        if mode is None or mode.lstrip("ael") not in ("y", "n") or not names:
            sys.stderr.write("  Usage: lvchange -ay|-an VG/LV...\n")
            return 3
        rc = 0
        for name in names:
            vg, _, lv = name.partition("/")
            # The real LVM decides what this host's lvchange sees: its own configuration (which
            # hides the domains' devices) with the caller's --config or devices options.
            seen = subprocess.run(
                ["lvs", "--noheadings", "-o", "lv_name", *config, f"{vg}/{lv}"],
                capture_output=True,
                text=True,
                env=self.host_env,
            )
            if seen.returncode != 0:
                sys.stderr.write(
                    "".join(f"  {x.strip()}\n" for x in seen.stderr.splitlines() if x.strip() and "WARNING" not in x)
                )
                rc = 5
                continue
            try:
                self.lv(vg, lv)
                if mode.endswith("y"):
                    self.activate(host_id, vg, lv)
                else:
                    self.deactivate(host_id, vg, lv)
            except LvmError as e:
                message = str(e).split(" failed: ", 1)[-1]
                sys.stderr.write(f"  {message}\n")
                rc = 5
        return rc

    def _mark_active(self, host_id: str, out: str) -> str:
        with self._locked():
            active = self._load()["active"].get(host_id, {})
        if out.lstrip().startswith("{"):
            data = json.loads(out)
            for report in data.get("report", []):
                for rows in report.values():
                    for row in rows:
                        key = f"{row.get('vg_name')}/{row.get('lv_name')}"
                        if "lv_attr" in row:
                            row["lv_attr"] = _attr(row["lv_attr"], active.get(key))
                        if "lv_active" in row:
                            row["lv_active"] = "active" if key in active else ""
            return json.dumps(data, indent=2) + "\n"
        lines = []
        for line in out.splitlines():
            words = line.split()
            match = re.search(r"(?<!\S)[-a-zA-Z]{4}[-aX][-oX][-a-zA-Z]{4}(?!\S)", line)
            if match and len(words) >= 2:
                key = f"{words[1]}/{words[0]}"
                line = line[: match.start()] + _attr(match[0], active.get(key)) + line[match.end() :]
            lines.append(line)
        return "\n".join(lines) + ("\n" if out.endswith("\n") else "")


def _attr(attr: str, entry: dict | None) -> str:
    if len(attr) < 6:
        return attr
    state = "a" if entry else "-"
    opened = "o" if entry and any(h != MANUAL for h in entry["holders"]) else "-"
    return attr[:4] + state + opened + attr[6:]


def _report(out: str, kind: str) -> list[dict]:
    rows = []
    for report in json.loads(out).get("report", []):
        rows += report.get(kind, [])
    return rows


def _losetup(*args: str) -> str:
    result = subprocess.run(["losetup", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise LvmError(f"losetup {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _loops_over(path: Path) -> list[tuple[str, int, int]]:
    """(device, offset, sizelimit) of every loop device attached to `path`."""
    if not path.exists():
        return []
    result = subprocess.run(
        ["losetup", "-n", "-O", "NAME,OFFSET,SIZELIMIT", "-j", str(path)], capture_output=True, text=True
    )
    found = []
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            found.append((parts[0], int(parts[1]), int(parts[2])))
    return found


def _detach(loop: str) -> None:
    subprocess.run(["losetup", "-d", loop], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m ovirtsim.lvm --state-dir DIR --host HOST_ID lvs|lvchange ARGS`: a host's LVM commands."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 5 or argv[0] != "--state-dir" or argv[2] != "--host":
        sys.stderr.write("usage: python -m ovirtsim.lvm --state-dir DIR --host HOST_ID lvs|lvchange|vgs|pvs [ARGS]\n")
        return 2
    state_dir, host_id, rest = argv[1], argv[3], argv[4:]
    return Lvm(Path(state_dir)).host_command(host_id, rest)


if __name__ == "__main__":
    sys.exit(main())
