"""The netcat mode's two ends on their own: the host's sender script (run here with python3, as a
host runs it) and the node's receiving pipeline, over loopback."""

import os
import socket
import subprocess
import sys

import pytest

from core.errors import Cancelled
from hosts.session import _netcat_sender, _receive_hashed
from tests.helpers import start_tampering_proxy

MiB = 1024**2
TOKEN = "a" * 32


@pytest.fixture
def start_sender():
    """Starts the host's sender script on a file; what a failed test left running is killed."""
    started = []

    def start(path, length=None) -> tuple[subprocess.Popen, int]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _netcat_sender("127.0.0.1", TOKEN, str(path), length)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        started.append(proc)
        return proc, int(proc.stdout.readline())

    yield start
    for proc in started:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def receive(port: int, out, *, token: str = TOKEN, cancelled=lambda: False) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:  # a hang fails the test
        sock.sendall(token.encode())
        return _receive_hashed(sock, out, progress=lambda n: None, cancelled=cancelled)


@pytest.mark.parametrize("length", [None, 2 * MiB + 3])
def test_it_moves_the_bytes_and_both_ends_agree_on_their_sha256(tmp_path, length, start_sender):
    data = os.urandom(5 * MiB + 17)  # not a whole number of buffers
    volume, out = tmp_path / "volume", tmp_path / "copy"
    volume.write_bytes(data)
    proc, port = start_sender(volume, length)
    got, received = receive(port, out)
    sent = proc.stdout.readline().strip().decode()
    assert proc.wait(30) == 0
    expected = data if length is None else data[:length]
    assert (got, out.read_bytes()) == (len(expected), expected)
    assert sent == received


def test_it_sends_nothing_to_a_connection_without_the_token(tmp_path, start_sender):
    volume = tmp_path / "volume"
    volume.write_bytes(os.urandom(MiB))
    proc, port = start_sender(volume)
    got, _ = receive(port, tmp_path / "copy", token="b" * 32)
    assert got == 0
    assert proc.wait(30) != 0 and b"wrong token" in proc.stderr.read()


def test_it_ends_without_a_hash_when_the_volume_cannot_be_read(tmp_path, start_sender):
    """A read error on the host (EIO: /proc/self/mem at address 0 gives one) ends the sender saying
    so and sending no hash, so the node cannot take what arrived for the volume."""
    proc, port = start_sender("/proc/self/mem")
    got, _ = receive(port, tmp_path / "copy")
    assert proc.wait(30) != 0
    assert proc.stdout.read() == b""
    assert b"reading the volume failed: [Errno 5] Input/output error" in proc.stderr.read()
    assert got == 0


def test_it_tells_bytes_changed_on_the_way_by_their_sha256(tmp_path, start_sender):
    """A byte flipped between the ends (what the check is for: netcat traffic is neither encrypted
    nor authenticated) makes the node's SHA-256 differ from the one the host sends over SSH."""
    volume, out = tmp_path / "volume", tmp_path / "copy"
    volume.write_bytes(os.urandom(3 * MiB))
    proc, port = start_sender(volume)
    (_, proxy_port), proxy, flipped = start_tampering_proxy(("127.0.0.1", port))
    got, received = receive(proxy_port, out)
    proxy.join()
    assert flipped == [MiB]
    sent = proc.stdout.readline().strip().decode()
    assert proc.wait(30) == 0 and got == 3 * MiB
    assert sent and received != sent


def test_it_stops_receiving_when_the_job_is_cancelled(tmp_path, start_sender):
    volume = tmp_path / "volume"
    volume.write_bytes(os.urandom(64 * MiB))
    proc, port = start_sender(volume)
    with pytest.raises(Cancelled):
        receive(port, tmp_path / "copy", cancelled=lambda: True)
    # The node's socket closed under it: the sender ends, saying so, and sends no hash.
    assert proc.wait(30) != 0
    assert b"sending failed, the node stopped taking the data" in proc.stderr.read()
    assert proc.stdout.read() == b""
