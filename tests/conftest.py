"""Fixtures shared by the tests of the engine's feature and student paths."""
import pytest

from relit_hands.engine import Engine
from relit_hands.environment import EnvironmentMap


@pytest.fixture(scope="session")
def engine():
    """One headless Engine (Embree ray casting) for the feature, student-data and student tests."""
    e = Engine(raycast="embree")
    yield e
    e.release()


@pytest.fixture(scope="session")
def env():
    """The sky with its sun turned in front of the hands."""
    return EnvironmentMap.from_name_or_path("sky_sun").rotate(160.0)
