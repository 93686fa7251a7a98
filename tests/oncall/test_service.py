"""Overrides in the store, and who is on call once they join the schedules (SQLite and
PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from syncd.oncall import service
from syncd.oncall.schedules import Handoff
from syncd.store.errors import NotFound

NOW = datetime(2026, 11, 6, 12, tzinfo=UTC)          # a Friday, alice in office hours


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def add(session, responses, **overrides):
    fields = {"schedule_id": "payments-primary", "user_id": "erin",
              "starts_at": at("2026-11-07T00:00"), "ends_at": at("2026-11-08T00:00"),
              "actor": "ops-bot", "now": NOW, **overrides}
    return service.add_override(session=session, responses=responses, **fields)


def test_an_override_is_stored_with_who_made_it_and_wins(store, responses):
    with store.transaction() as session:
        override = add(session, responses, starts_at=at("2026-11-06T11:00"),
                       ends_at=at("2026-11-06T13:00"))
    with store.transaction() as session:
        [stored] = service.list_overrides(session=session, schedule_id="payments-primary")
        assert (stored.id, stored.user_id, stored.created_by, stored.created_at) == (
            override.id, "erin", "ops-bot", NOW)
        assert stored.starts_at == at("2026-11-06T11:00")
        [payments] = service.who_is_on_call(session=session, responses=responses, at=NOW,
                                            schedule_id="payments-primary")
    assert payments.user_id == "erin"
    assert payments.until == at("2026-11-06T13:00")
    assert payments.next_handoffs == [Handoff(at("2026-11-06T13:00"), "erin", "alice"),
                                      Handoff(at("2026-11-06T17:00"), "alice", "carol"),
                                      Handoff(at("2026-11-07T08:00"), "carol", None)]


@pytest.mark.parametrize("change, message", [
    ({"schedule_id": "payments-primay"}, "(did you mean 'payments-primary'?)"),
    ({"user_id": "alcie"}, "unknown user 'alcie' (did you mean 'alice'?)"),
    ({"starts_at": datetime(2026, 11, 7)}, "has no UTC offset"),
    ({"ends_at": at("2026-11-07T00:00")}, "ends (2026-11-07T00:00:00+00:00) before it starts"),
    ({"starts_at": at("2026-11-05T00:00"), "ends_at": at("2026-11-06T11:00")}, "in the past"),
])
def test_an_override_that_cannot_be_meant_is_refused_and_nothing_is_stored(store, responses,
                                                                           change, message):
    with store.transaction() as session:
        with pytest.raises(service.InvalidOverride) as refused:
            add(session, responses, **change)
        assert message in str(refused.value)
        assert service.list_overrides(session=session) == []


def test_removing_an_override_returns_it_and_a_second_removal_is_not_found(store, responses):
    with store.transaction() as session:
        override_id = add(session, responses).id
    with store.transaction() as session:
        with pytest.raises(NotFound, match="in schedule 'search'"):
            service.remove_override(session=session, override_id=override_id, schedule_id="search")
        removed = service.remove_override(session=session, override_id=override_id)
        assert (removed.id, removed.user_id) == (override_id, "erin")
    with store.transaction() as session:
        assert service.list_overrides(session=session) == []
        with pytest.raises(NotFound, match=f"override {override_id} does not exist"):
            service.remove_override(session=session, override_id=override_id)


def test_listing_since_an_instant_leaves_out_overrides_already_over(store, responses):
    with store.transaction() as session:
        add(session, responses, starts_at=at("2026-11-06T11:00"), ends_at=at("2026-11-06T13:00"))
        add(session, responses, schedule_id="search", user_id="carol")
    with store.transaction() as session:
        assert [o.schedule_id for o in service.list_overrides(session=session)] == [
            "payments-primary", "search"]
        later = service.list_overrides(session=session, since=at("2026-11-06T13:00"))
        assert [o.schedule_id for o in later] == ["search"]
        assert service.list_overrides(session=session, schedule_id="search",
                                      since=at("2026-11-08T00:00")) == []


def test_who_is_on_call_answers_for_every_schedule_and_refuses_an_unknown_one(store, responses):
    with store.transaction() as session:
        answers = service.who_is_on_call(session=session, responses=responses, at=NOW)
        assert [(a.schedule.id, a.user_id) for a in answers] == [
            ("payments-primary", "alice"), ("search", "alice"), ("unused", None)]
        assert answers[1].until == at("2026-11-06T14:00")     # 09:00 in New York
        with pytest.raises(NotFound, match="did you mean 'search'"):
            service.who_is_on_call(session=session, responses=responses, at=NOW,
                                   schedule_id="serach")


def test_coverage_gaps_list_what_services_page_and_count_stored_overrides(store, responses):
    start, end = NOW, NOW + timedelta(days=14)
    without_store = service.coverage_gaps(session=None, responses=responses, start=start, end=end)
    assert list(without_store) == ["payments-primary"]       # search is covered, unused not paged
    assert without_store["payments-primary"][:2] == [
        (at("2026-11-07T08:00"), at("2026-11-07T17:00")),
        (at("2026-11-08T08:00"), at("2026-11-08T17:00"))]
    assert len(without_store["payments-primary"]) == 4
    with store.transaction() as session:
        add(session, responses, starts_at=at("2026-11-07T00:00"), ends_at=at("2026-11-09T00:00"))
        with_overrides = service.coverage_gaps(session=session, responses=responses, start=start,
                                               end=end)
    assert with_overrides["payments-primary"] == without_store["payments-primary"][2:]
