"""The review's tests use the engine tests' world (both simulators, real clients, an engine)."""

from tests.engine.conftest import mappings, simulators, world  # noqa: F401  (fixtures)
