"""Regression tests from the review of issue 10: after an outage every step fires in order."""


def test_after_an_outage_every_step_still_fires_in_order(paging):
    incident = paging.incident()
    paging.advance(0)
    paging.clock.advance(120 * 60)          # daemon down two hours
    paging.escalations.cycle()
    rows = paging.pages(incident)
    assert [r[0] for r in rows] == ["alice", "alice", "erin"], rows
    paging.advance(15)
    assert [r[0] for r in paging.pages(incident)][3:] == ["alice", "alice"]
    paging.advance(10)
    assert [r[0] for r in paging.pages(incident)][5:] == ["erin"]
