"""Settings read from the environment (core.env): a malformed value is named at start-up."""

import pytest

from core.env import EnvError, env_seconds


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", (1.0, 2.0)), ("0.5, 1,2", (0.5, 1.0, 2.0)), ("0", (0.0,))],
)
def test_it_reads_a_list_of_seconds(monkeypatch, raw, expected):
    monkeypatch.setenv("ENGINE_RETRY_DELAYS", raw)
    assert env_seconds("ENGINE_RETRY_DELAYS", (1.0, 2.0)) == expected


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("1,two", "ENGINE_RETRY_DELAYS='1,two' is not a list of seconds (for example 1,2,4)"),
        ("-1", "ENGINE_RETRY_DELAYS='-1': give one or more durations from 0 to 3600 seconds"),
        (",", "ENGINE_RETRY_DELAYS=',': give one or more durations from 0 to 3600 seconds"),
        ("nan", "ENGINE_RETRY_DELAYS='nan': give one or more durations from 0 to 3600 seconds"),
    ],
)
def test_it_names_the_variable_of_a_malformed_list_of_seconds(monkeypatch, raw, says):
    monkeypatch.setenv("ENGINE_RETRY_DELAYS", raw)
    with pytest.raises(EnvError) as refused:
        env_seconds("ENGINE_RETRY_DELAYS", (1.0,))
    assert str(refused.value) == says


def test_it_reads_a_choice_and_names_a_wrong_one(monkeypatch):
    from core.env import env_choice

    monkeypatch.setenv("NFS_EXPORTER", " Command ")
    assert env_choice("NFS_EXPORTER", "ganesha", ("ganesha", "command", "off")) == "command"
    monkeypatch.setenv("NFS_EXPORTER", "kernel")
    with pytest.raises(EnvError) as refused:
        env_choice("NFS_EXPORTER", "ganesha", ("ganesha", "command", "off"))
    assert str(refused.value) == "NFS_EXPORTER='kernel' is not one of ganesha, command, off"
