"""OpenSSH connections (core.openssh) against a throwaway sshd on 127.0.0.1."""

import tempfile

from core.openssh import OpenSsh, SshTarget


def test_it_logs_in_and_runs_commands_under_a_temporary_directory_too_long_for_a_socket(sshd, tmp_path, monkeypatch):
    """A unix socket's path holds 107 bytes: under a long TMPDIR (a service's private temporary
    directory) the shared connection's control socket is made where it fits."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    target = SshTarget(
        address="127.0.0.1", port=sshd["port"], user=sshd["user"], private_key=sshd["key"], host_key=sshd["host_key"]
    )
    with OpenSsh(target) as ssh:
        ssh.log_in()
        assert ssh.run("echo logged in", what="a test command").strip() == "logged in"
        made = ssh.dir
    assert not made.exists()  # the key and the socket go with the connection
