"""Which data path the SSH strategy uses: measured here, printed, never asserted.

    .venv/bin/python bench/ssh_paths.py [--size-gib 8] [--data-mib 1024]

A throwaway sshd on 127.0.0.1 (one generated key, pinned host key) stands in for a hypervisor.
On a thin QCOW2 of SIZE holding DATA (16 MiB at the start of every 128 MiB, as the demo's
bigdata01 disk), in one run, warm cache:
  - OpenSSH `cat` of the volume file (what copying layer files costs),
  - `qemu-nbd` started on the host, its unix socket forwarded by the same OpenSSH connection,
    read by a local `qemu-img convert -O qcow2` (virtnbdbackup's remote mode),
  - netcat: `nc -l` on the host for this transfer only, the node connects (no encryption),
  - local `qemu-img convert` (the floor).
Both SSH paths use `-c aes128-gcm@openssh.com -o Compression=no` (FIELD-NOTES: the fastest
cipher here). Ratios are against `ssh cat` of the same file.
"""

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import checks

MiB, GiB = 1024**2, 1024**3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sshd(d: Path) -> tuple[subprocess.Popen, int]:
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n"
        f"PidFile {d}/sshd.pid\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
        "PermitRootLogin prohibit-password\nAllowStreamLocalForwarding yes\n"
    )
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text()}")
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("sshd did not start")


def ssh_args(d: Path, port: int) -> list[str]:
    return [
        "ssh",
        "-p",
        str(port),
        "-i",
        str(d / "client_key"),
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={d}/known_hosts",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "Compression=no",
        "-c",
        "aes128-gcm@openssh.com",
    ]


def make_image(path: Path, size: int, data: int) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)], check=True)
    pieces = data // (16 * MiB)
    step = size // pieces
    cmds = []
    for n in range(pieces):
        cmds += ["-c", f"write -P {n % 250 + 1} {n * step} 16M"]
    subprocess.run(["qemu-io", "-f", "qcow2", *cmds, str(path)], check=True, stdout=subprocess.DEVNULL)


def timed(label: str, fn, nbytes: int, check, peer: float | None = None) -> float:
    """Time fn(), then check(label) what it wrote; with `peer`, its speed against ssh cat's."""
    started = time.perf_counter()
    fn()
    elapsed = checks.positive(f"the time of {label}", time.perf_counter() - started)
    check(label)
    ratio = f"  {checks.ratio('ssh_paths', f'{label}: speed / ssh cat', peer, elapsed):.2f}x ssh cat" if peer else ""
    print(f"  {label:58s} {elapsed:6.2f}s {nbytes / MiB / elapsed:7.0f} MiB/s{ratio}", flush=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=int, default=8)
    parser.add_argument("--data-mib", type=int, default=1024)
    args = parser.parse_args()
    d = Path(tempfile.mkdtemp(prefix="bench-ssh-paths-"))
    sshd, port = start_sshd(d)
    try:
        image = d / "volume"
        make_image(image, args.size_gib * GiB, args.data_mib * MiB)
        size = image.stat().st_size
        allocated = checks.source_image(image, fmt="qcow2", virtual_size=args.size_gib * GiB)
        checks.at_least("the bytes allocated to the volume", allocated, "the data written", args.data_mib * MiB)
        print(f"volume: {args.size_gib} GiB virtual QCOW2, {size / MiB:.0f} MiB file; warm cache")
        subprocess.run(["cat", str(image)], stdout=subprocess.DEVNULL, check=True)
        ssh = [*ssh_args(d, port), "root@127.0.0.1"]
        out = d / "out"

        def same_image(label: str) -> None:
            checks.same_image(label, image, out)

        def same_bytes(label: str) -> None:
            checks.same_bytes(label, image, out)

        timed("local qemu-img convert -O qcow2 (floor)", lambda: convert(str(image), out, "qcow2"), size, same_image)
        peer = timed("OpenSSH cat of the volume file", lambda: ssh_cat(ssh, image, out), size, same_bytes)
        timed(
            "qemu-nbd on the host, unix socket over OpenSSH, convert",
            lambda: nbd_tunnel(d, ssh, image, out),
            size,
            same_image,
            peer,
        )
        timed(
            "same, 4 connections (qemu-nbd -e 4, convert -m 4)",
            lambda: nbd_tunnel(d, ssh, image, out, 4),
            size,
            same_image,
            peer,
        )
        timed("netcat: nc -l on the host, the node connects", lambda: netcat(ssh, image, out), size, same_bytes, peer)
    finally:
        sshd.terminate()
        sshd.wait()
        shutil.rmtree(d, ignore_errors=True)


def convert(src: str, out: Path, fmt: str, *extra: str) -> None:
    out.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "convert", *extra, "-O", "qcow2", "-f", fmt, src, str(out)], check=True)


def ssh_cat(ssh: list[str], image: Path, out: Path) -> None:
    with open(out, "wb") as f:
        subprocess.run([*ssh, f"cat {image}"], stdout=f, check=True)


def nbd_tunnel(d: Path, ssh: list[str], image: Path, out: Path, conns: int = 1) -> None:
    remote, local = d / "remote.sock", d / "local.sock"
    for p in (remote, local):
        p.unlink(missing_ok=True)
    script = (
        f"qemu-nbd --fork --persistent -e {conns} -r -f qcow2 -k {remote} {image} --pid-file {d}/nbd.pid"
        f" && echo ready && cat >/dev/null; kill $(cat {d}/nbd.pid)"
    )
    proc = subprocess.Popen(
        [*ssh[:1], "-L", f"{local}:{remote}", *ssh[1:], script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout.readline().strip() == b"ready"
    extra = ["-m", str(conns), "-W"] if conns > 1 else []
    url = f"nbd+unix:///?socket={local}"
    try:
        convert(url, out, "raw", *extra)
    finally:
        proc.stdin.close()
        proc.wait()


def netcat(ssh: list[str], image: Path, out: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([*ssh, f"echo ready; nc -N -l 127.0.0.1 {port} < {image}"], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    for _ in range(200):
        try:
            sock = socket.create_connection(("127.0.0.1", port))
            break
        except ConnectionRefusedError:
            time.sleep(0.01)
    with sock, open(out, "wb") as f:
        while chunk := sock.recv(4 * MiB):
            f.write(chunk)
    proc.wait()


if __name__ == "__main__":
    main()
