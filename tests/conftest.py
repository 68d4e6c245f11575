import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

#: per-test limit for tests marked slow (the default for the others is ``timeout`` in pyproject.toml)
SLOW_TEST_TIMEOUT_S = 900


def layer(filename: str) -> str:
    """The suite layer of a test file (tests/README.md): contract, trainer or simulator."""
    if filename == "test_contract.py":
        return "contract"
    if filename.startswith(("test_kmtr_", "test_eval_")):
        return "trainer"
    return "simulator"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets its layer's marker (``-m simulator`` / ``trainer`` / ``contract``); tests
    marked slow (without a timeout of their own) get the longer limit."""
    for item in items:
        name = layer(item.path.name)
        if not item.get_closest_marker(name):
            item.add_marker(getattr(pytest.mark, name))
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT_S))


@pytest.fixture(scope="session")
def simulated_store(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A store built by the simulator from demo phantom subjects (tests/simulated_store.py), once
    per test session."""
    from simulated_store import build_simulated_store

    return build_simulated_store(tmp_path_factory.mktemp("simulated"))
