from tests.oncall_escalation.conftest import paging  # noqa: F401
from tests.notify.conftest import people, make_sender  # noqa: F401
