import pytest

from inventory.sync import sync_manager
from repository.models import BackupDestination
from tests.conftest import register_manager


@pytest.fixture
def manager(db, demo_sim):
    manager = register_manager(demo_sim)
    sync_manager(manager)
    return manager


@pytest.fixture
def destination(db, tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    return BackupDestination.objects.create(name="repo", path=str(path))
