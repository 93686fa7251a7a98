"""Per-service alert settings from the response files: the severity mapping and the rate limit."""

from syncd.alerts.grouping import incident_fields_for
from syncd.alerts.intake import RateLimiter
from syncd.clock import ManualClock
from syncd.oncall.definitions import Service


def service(**settings) -> Service:
    return Service.model_validate({"id": "api", "name": "API", "escalation_policy": "ops",
                                   **settings})


def test_a_service_can_override_a_line_of_the_severity_mapping():
    custom = service(severities={"warning": {"priority": "P2", "urgency": "high"}})
    assert incident_fields_for("warning", custom) == {"priority": "P2", "urgency": "high"}
    assert incident_fields_for("critical", custom) == {"priority": "P1", "urgency": "high"}
    assert incident_fields_for("info", service()) == {"priority": "P4", "urgency": "low"}


def test_each_routing_key_has_its_own_services_budget():
    clock = ManualClock()
    limiter = RateLimiter(clock=clock)
    assert all(limiter.allow("slow", 2) for _ in range(2))
    assert not limiter.allow("slow", 2)
    assert all(limiter.allow("fast", 120) for _ in range(120))
    assert limiter.retry_after(2) == 30
    clock.advance(30)
    assert limiter.allow("slow", 2)


def test_bad_settings_are_refused():
    import pytest
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        service(events_per_minute=0)
    with pytest.raises(ValidationError, match="severities.fatal"):
        service(severities={"fatal": {"priority": "P1", "urgency": "high"}})
