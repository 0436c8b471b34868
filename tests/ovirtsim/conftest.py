import pytest

from ovirtsim import Simulator


@pytest.fixture(scope="session")
def conn(demo_sim):
    connection = demo_sim.connect()
    yield connection
    connection.close()


@pytest.fixture
def sim(tmp_path):
    """A fresh engine with one data center, cluster, host and data domain."""
    with Simulator(tmp_path / "engine", seed="empty") as sim:
        yield sim


@pytest.fixture
def empty_conn(sim):
    connection = sim.connect()
    yield connection
    connection.close()
