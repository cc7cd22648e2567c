"""The linked-data tests use the SensorThings test world (tests/sta/conftest.py)."""

from tests.sta.conftest import sta, sta_client, sta_ro  # noqa: F401
