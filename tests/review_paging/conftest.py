from tests.oncall_escalation.conftest import paging  # noqa: F401  (re-export the fixture)
