"""The throttle and dedup rules as pure functions: what one contact gets now, bundled how."""

from datetime import datetime, timedelta, timezone

import pytest

from syncd.notify.throttle import PendingMessage, Rate, plan

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)


def page(row_id, incident, due=NOW):
    return PendingMessage(id=row_id, due_at=due, incident_id=incident, kind="page")


def test_a_free_contact_gets_the_due_page_now():
    assert plan([page(1, 10)], [], NOW).send_now == [[1]]


def test_nothing_due_waits_for_the_earliest_due_time():
    result = plan([page(1, 10, NOW + 3 * MINUTE), page(2, 11, NOW + MINUTE)], [], NOW)
    assert result.send_now == [] and result.wait_until == NOW + MINUTE


def test_no_pending_means_no_wait():
    assert plan([], [NOW], NOW).wait_until is None


def test_two_pages_of_one_incident_to_one_contact_are_one_message():
    assert plan([page(1, 10), page(2, 10)], [], NOW).send_now == [[1, 2]]


def test_a_contact_paged_a_moment_ago_waits_out_the_minute():
    last = NOW - timedelta(seconds=20)
    result = plan([page(1, 10)], [last], NOW)
    assert result.send_now == [] and result.wait_until == last + MINUTE


def test_pages_for_several_incidents_share_the_one_allowed_message():
    result = plan([page(1, 10), page(2, 11, NOW - MINUTE), page(3, 12)], [], NOW)
    assert result.send_now == [[2, 1, 3]]
    assert result.wait_until is None


def test_sends_older_than_the_window_do_not_count():
    assert plan([page(1, 10)], [NOW - MINUTE - timedelta(seconds=1)], NOW).send_now == [[1]]


def test_a_wider_rate_sends_separately_then_bundles_the_rest_in_the_last_slot():
    rate = Rate(messages=3, per=timedelta(minutes=15))
    pending = [page(i, 100 + i, NOW + timedelta(seconds=i - 10)) for i in range(1, 6)]
    result = plan(pending, [NOW - timedelta(minutes=5)], NOW, rate)
    assert result.send_now == [[1], [2, 3, 4, 5]]


def test_a_bundle_in_one_message_counts_as_one_send():
    sent_together = NOW - timedelta(seconds=30)
    result = plan([page(1, 10)], [sent_together, sent_together, sent_together],
                  NOW, Rate(messages=2, per=MINUTE))
    assert result.send_now == [[1]]


def test_tests_are_never_bundled_with_pages():
    test_row = PendingMessage(id=9, due_at=NOW - MINUTE, kind="test")
    result = plan([test_row, page(1, 10)], [], NOW)
    assert result.send_now == [[9]]
    assert result.wait_until == NOW + MINUTE


def test_the_next_slot_counts_what_was_just_sent():
    rate = Rate(messages=2, per=MINUTE)
    earlier = NOW - timedelta(seconds=10)
    result = plan([PendingMessage(1, NOW, kind="test"), PendingMessage(2, NOW, kind="test")],
                  [earlier], NOW, rate)
    assert result.send_now == [[1]] and result.wait_until == earlier + MINUTE


def test_a_rate_of_nothing_is_refused():
    with pytest.raises(ValueError, match="at least 1 message"):
        Rate(messages=0)
