"""The shared remote-call policy: what is retried, how long it waits, when it gives up, what it counts."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone

import pytest
import requests
import responses
from jira.exceptions import JIRAError

from syncd.clock import ManualClock
from syncd.connectors.base import (AuthError, PermanentRemoteError, RemoteError,
                                   TransientRemoteError)
from syncd.connectors.http import (RetryPolicy, call_remote, classify_error, instrumented_session,
                                   parse_retry_after, remote_operation)
from syncd.metrics import REGISTRY

URL = "https://acme.service-now.com/api/now/table/incident"
SN_ERROR = {"error": {"message": "Operation Failed", "detail": "Data Policy Exception"},
            "status": "failure"}
_names = itertools.count()


def fresh_connector() -> str:
    """A connector label no other test used, so metric values start at zero."""
    return f"conn{next(_names)}"


def response(status: int, body: object = None, headers: dict[str, str] | None = None
             ) -> requests.Response:
    """A real requests.Response, as a client library hands it over inside an error."""
    resp = requests.Response()
    resp.status_code = status
    resp._content = json.dumps(body).encode() if body is not None else b""
    resp.headers.update(headers or {})
    resp.url = URL
    return resp


def http_error(status: int, body: object = None, headers: dict[str, str] | None = None
               ) -> requests.HTTPError:
    resp = response(status, body, headers)
    return requests.HTTPError(f"{status} error", response=resp)


def requests_total(connector: str, operation: str, status: str) -> float:
    return REGISTRY.get_sample_value("syncd_remote_requests_total", {
        "connector": connector, "operation": operation, "status": status}) or 0.0


def request_seconds_count(connector: str, operation: str) -> float:
    return REGISTRY.get_sample_value("syncd_remote_request_seconds_count", {
        "connector": connector, "operation": operation}) or 0.0


def get_json(session: requests.Session, url: str = URL):
    """What a connector's remote call does: one request, an error status raised."""
    def call():
        answer = session.get(url)
        answer.raise_for_status()
        return answer.json()
    return call


# -- classification ---------------------------------------------------------------------------

@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_auth_errors_that_name_the_connector(status):
    error = classify_error("sn-prod", http_error(status, {
        "error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"},
        "status": "failure"}))
    assert isinstance(error, AuthError) and not error.transient
    assert error.status == status
    assert "sn-prod" in str(error) and "check the credentials" in str(error)
    assert "User Not Authenticated" in str(error)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_server_trouble_are_transient(status):
    error = classify_error("sn", http_error(status, SN_ERROR))
    assert isinstance(error, TransientRemoteError) and error.transient
    assert error.status == status


@pytest.mark.parametrize("status", [400, 404, 405, 409, 410, 422])
def test_refusals_are_permanent_and_keep_the_remote_message(status):
    error = classify_error("sn", http_error(status, SN_ERROR))
    assert type(error) is PermanentRemoteError
    assert error.status == status
    assert "Operation Failed" in error.message and "Data Policy Exception" in error.message


@pytest.mark.parametrize("exc", [requests.ConnectionError("refused"), requests.ConnectTimeout("slow"),
                                 requests.ReadTimeout("slow"),
                                 requests.exceptions.ChunkedEncodingError("cut")])
def test_connection_trouble_is_transient(exc):
    assert isinstance(classify_error("sn", exc), TransientRemoteError)


def test_jira_errors_are_classified_like_http_errors_with_jiras_messages():
    body = {"errorMessages": ["Issue does not exist"], "errors": {"priority": "invalid priority"}}
    not_found = JIRAError(text="Issue does not exist", status_code=404, url="https://x/rest/api/2/issue/OPS-1",
                          response=response(404, body))
    error = classify_error("jira", not_found)
    assert type(error) is PermanentRemoteError
    assert "Issue does not exist" in error.message and "priority: invalid priority" in error.message

    throttled = JIRAError(status_code=429, response=response(429, {"errorMessages": []},
                                                             {"Retry-After": "12"}))
    error = classify_error("jira", throttled)
    assert isinstance(error, TransientRemoteError) and error.retry_after == 12.0
    assert isinstance(classify_error("jira", JIRAError(status_code=401, text="Unauthorized")), AuthError)


def test_a_429_carries_its_retry_after_in_seconds_or_as_a_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    in_seconds = classify_error("sn", http_error(429, SN_ERROR, {"Retry-After": "7"}), now=now)
    as_date = classify_error("sn", http_error(503, None, {"Retry-After": "Thu, 01 Jan 2026 12:00:30 GMT"}),
                             now=now)
    assert in_seconds.retry_after == 7.0
    assert as_date.retry_after == 30.0


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("  ", None), ("120", 120.0), ("0", 0.0), ("1.5", 1.5), ("-3", None),
    ("soon", None), ("nan", None),
    ("Thu, 01 Jan 2026 12:01:00 GMT", 60.0),
    ("Thursday, 01-Jan-26 12:00:10 GMT", 10.0),       # RFC 850, obsolete but allowed
    ("Wed, 31 Dec 2025 12:00:00 GMT", 0.0),           # already past: retry now
])
def test_parse_retry_after(value, expected):
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after(value, now=now) == expected


# -- retries ----------------------------------------------------------------------------------

@responses.activate
def test_retry_after_in_seconds_is_waited_on_the_clock():
    clock = ManualClock()
    responses.get(URL, status=429, json=SN_ERROR, headers={"Retry-After": "7"})
    responses.get(URL, status=429, json=SN_ERROR, headers={"Retry-After": "3"})
    responses.get(URL, json={"result": []})
    session = instrumented_session(fresh_connector())
    result = call_remote("sn", "fetch", get_json(session), policy=RetryPolicy(), clock=clock)
    assert result == {"result": []}
    assert clock.monotonic() == 10.0
    assert len(responses.calls) == 3


@responses.activate
def test_retry_after_as_an_http_date_is_waited_until_that_moment():
    clock = ManualClock(datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc))
    responses.get(URL, status=503, body="", headers={"Retry-After": "Thu, 01 Jan 2026 12:00:45 GMT"})
    responses.get(URL, json={"result": []})
    session = instrumented_session(fresh_connector())
    call_remote("sn", "fetch", get_json(session), policy=RetryPolicy(), clock=clock)
    assert clock.monotonic() == 45.0


@responses.activate
def test_without_retry_after_the_backoff_grows_exponentially_with_jitter_and_a_cap():
    clock = ManualClock()
    for _ in range(5):
        responses.get(URL, status=502, body="Bad Gateway")
    responses.get(URL, json={"result": []})
    waits: list[float] = []
    real_sleep = clock.sleep

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        real_sleep(seconds)
    clock.sleep = sleep   # type: ignore[method-assign]
    policy = RetryPolicy(max_attempts=6, backoff_initial=1.0, backoff_max=5.0)
    call_remote("sn", "fetch", get_json(instrumented_session(fresh_connector())),
                policy=policy, clock=clock)
    assert len(waits) == 5
    for n, wait in enumerate(waits):
        base = 1.0 * 2 ** n
        assert min(base, 5.0) <= wait <= min(base + 1.0, 5.0), (n, waits)


@responses.activate
def test_gives_up_after_max_attempts_with_the_last_error():
    clock = ManualClock()
    responses.get(URL, status=503, json={"error": {"message": "Service unavailable"}})
    with pytest.raises(TransientRemoteError) as raised:
        call_remote("sn", "fetch", get_json(instrumented_session(fresh_connector())),
                    policy=RetryPolicy(max_attempts=3, backoff_initial=0.1), clock=clock)
    assert len(responses.calls) == 3
    assert raised.value.status == 503 and "Service unavailable" in str(raised.value)


@responses.activate
def test_gives_up_rather_than_wait_past_the_total_time_budget():
    clock = ManualClock()
    responses.get(URL, status=429, json=SN_ERROR, headers={"Retry-After": "25"})
    with pytest.raises(TransientRemoteError) as raised:
        call_remote("sn", "fetch", get_json(instrumented_session(fresh_connector())),
                    policy=RetryPolicy(max_attempts=10, max_total_seconds=60), clock=clock)
    # Attempts at 0, 25 and 50 s; a fourth would start at 75 s, past the budget.
    assert len(responses.calls) == 3
    assert clock.monotonic() == 50.0
    assert raised.value.retry_after == 25.0   # the outbox can schedule its next try from it


@responses.activate
@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_permanent_errors_are_never_retried(status):
    clock = ManualClock()
    responses.get(URL, status=status, json=SN_ERROR)
    with pytest.raises(PermanentRemoteError):
        call_remote("sn", "update", get_json(instrumented_session(fresh_connector())),
                    policy=RetryPolicy(), clock=clock)
    assert len(responses.calls) == 1
    assert clock.monotonic() == 0.0


@responses.activate
def test_connection_errors_are_retried():
    clock = ManualClock()
    responses.get(URL, body=requests.ConnectionError("connection refused"))
    responses.get(URL, body=requests.ReadTimeout("read timed out"))
    responses.get(URL, json={"result": [1]})
    result = call_remote("sn", "fetch", get_json(instrumented_session(fresh_connector())),
                         policy=RetryPolicy(), clock=clock)
    assert result == {"result": [1]}
    assert len(responses.calls) == 3


def test_a_bug_in_the_call_is_not_mistaken_for_a_remote_error():
    calls = []

    def broken():
        calls.append(1)
        raise KeyError("result")
    with pytest.raises(KeyError):
        call_remote("sn", "fetch", broken, policy=RetryPolicy(), clock=ManualClock())
    assert len(calls) == 1


def test_remote_errors_raised_by_the_call_pass_through_and_transient_ones_are_retried():
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise TransientRemoteError("sn", "journal entry not visible yet")
        return "ok"
    assert call_remote("sn", "add_comment", flaky, policy=RetryPolicy(), clock=ManualClock()) == "ok"

    def refused():
        raise PermanentRemoteError("sn", "no sys_user has user_name = 'nobody'")
    with pytest.raises(PermanentRemoteError, match="nobody"):
        call_remote("sn", "update", refused, policy=RetryPolicy(), clock=ManualClock())


def test_retry_policy_refuses_nonsense():
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="backoff_max"):
        RetryPolicy(backoff_max=-1)


# -- instrumentation --------------------------------------------------------------------------

@responses.activate
def test_every_request_is_counted_by_operation_and_status():
    connector = fresh_connector()
    responses.get(URL, status=429, json=SN_ERROR, headers={"Retry-After": "1"})
    responses.get(URL, json={"result": []})
    responses.get(URL, body=requests.ConnectionError("refused"))
    session = instrumented_session(connector)
    call_remote(connector, "fetch_changes", get_json(session), policy=RetryPolicy(), clock=ManualClock())
    with pytest.raises(RemoteError):
        call_remote(connector, "check_auth", get_json(session),
                    policy=RetryPolicy(max_attempts=1), clock=ManualClock())
    assert requests_total(connector, "fetch_changes", "429") == 1
    assert requests_total(connector, "fetch_changes", "200") == 1
    assert requests_total(connector, "check_auth", "error") == 1
    assert request_seconds_count(connector, "fetch_changes") == 2
    assert request_seconds_count(connector, "check_auth") == 1


@responses.activate
def test_requests_outside_an_operation_are_labelled_other_and_operations_nest():
    connector = fresh_connector()
    responses.get(URL, json={"result": []})
    session = instrumented_session(connector)
    session.get(URL)
    with remote_operation("fetch"):
        with remote_operation("lookup_reference"):
            session.get(URL)
        session.get(URL)
    session.get(URL)
    assert requests_total(connector, "other", "200") == 2
    assert requests_total(connector, "lookup_reference", "200") == 1
    assert requests_total(connector, "fetch", "200") == 1


@responses.activate
def test_the_session_applies_its_timeout_and_has_no_hidden_retries():
    responses.get(URL, json={"result": []})
    session = instrumented_session(fresh_connector(), timeout=7.5, verify=False)
    session.get(URL)
    session.get(URL, timeout=2)
    assert responses.calls[0].request.req_kwargs["timeout"] == 7.5
    assert responses.calls[1].request.req_kwargs["timeout"] == 2
    assert session.verify is False
    for url in ("http://127.0.0.1:1/", "https://acme.service-now.com/"):
        assert session.get_adapter(url).max_retries.total == 0


@responses.activate
def test_one_operation_ends_within_the_budget_each_request_timing_out_by_what_is_left():
    clock = ManualClock()
    responses.get(URL, status=429, json=SN_ERROR, headers={"Retry-After": "7"})
    responses.get(URL, json={"result": []})
    policy = RetryPolicy(max_total_seconds=10)
    assert policy.budget_seconds == 10
    session = instrumented_session(fresh_connector(), timeout=30)
    call_remote("sn", "fetch", get_json(session), policy=policy, clock=clock)
    assert [c.request.req_kwargs["timeout"] for c in responses.calls] == [10, 3]
    session.get(URL)                            # outside an operation: the session's own timeout
    assert responses.calls[-1].request.req_kwargs["timeout"] == 30
    # A retry that would have less than a second left is not started.
    responses.get(URL, status=429, json=SN_ERROR, headers={"Retry-After": "9.5"})
    with pytest.raises(TransientRemoteError):
        call_remote("sn", "fetch", get_json(session), policy=policy, clock=clock)
    assert clock.monotonic() == 7.0
