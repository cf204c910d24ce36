import pytest

from pfsfuse.chunks import LocalStore


@pytest.fixture(params=["local"])
def store(request, tmp_path):
    """An empty ObjectStore of each backend; the contract tests run against all of them."""
    if request.param == "local":
        s = LocalStore(tmp_path / "objects")
    try:
        yield s
    finally:
        s.close()
