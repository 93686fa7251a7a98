"""Regression tests from the review of issue 10 (each failed before its fix).

PostgreSQL: the escalation loop locks escalation -> incident (FK KEY SHARE when it inserts the
notification/timeline rows), an acknowledgement locks incident (FOR UPDATE) -> escalation (the
hook's FOR UPDATE). Opposite lock order: a deadlock, and PostgreSQL aborts one of them."""
import threading

import syncd.incidents.service as incident_service
import syncd.oncall.escalation as escalation_module
from tests.oncall_escalation.conftest import Paging


def test_an_ack_while_a_step_fires_does_not_deadlock(postgres_store, tmp_path, monkeypatch):
    paging = Paging(postgres_store, tmp_path)
    incident = paging.incident()
    locked, go = threading.Event(), threading.Event()
    errors: dict[str, BaseException] = {}

    real_on_call = escalation_module.schedules.on_call

    def slow_on_call(*args, **kw):
        if threading.current_thread().name == "cycle":
            locked.set()
            go.wait(10)
        return real_on_call(*args, **kw)

    real_get = incident_service.get_incident

    def get(**kw):
        found = real_get(**kw)
        if kw.get("for_update") and threading.current_thread().name == "ack":
            go.set()
        return found

    monkeypatch.setattr(escalation_module.schedules, "on_call", slow_on_call)
    monkeypatch.setattr(incident_service, "get_incident", get)

    def run(name, fn):
        try:
            fn()
        except BaseException as error:  # noqa: BLE001
            errors[name] = error

    cycle = threading.Thread(name="cycle", target=run, args=("cycle", paging.escalations.cycle))
    cycle.start()
    assert locked.wait(10)
    ack = threading.Thread(name="ack", target=run, args=("ack", lambda: paging.commands.acknowledge(
        incident, actor="alice", source="api")))
    ack.start()
    cycle.join(30)
    ack.join(30)
    assert not errors, {k: f"{type(v).__name__}: {v}"[:300] for k, v in errors.items()}
