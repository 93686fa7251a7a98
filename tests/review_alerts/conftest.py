from tests.alerts.conftest import world  # noqa: F401  (the alerts fixture, reused)
