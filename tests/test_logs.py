"""Structured logs: one JSON object per line with the event's context as keys."""

import io
import json
import logging

import pytest

from syncd import logs


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_context_as_keys():
    stream = io.StringIO()
    logs.configure("json", "INFO", stream=stream)
    logging.getLogger("syncd.test").info("remote change applied",
                                         extra={"connector": "jira", "incident": 7})
    logging.getLogger("syncd.test").debug("not shown at INFO")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["msg"] == "remote change applied" and event["level"] == "info"
    assert event["connector"] == "jira" and event["incident"] == 7 and event["ts"].endswith("+00:00")


def test_auto_format_is_text_on_a_terminal_and_json_elsewhere():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    logs.configure("auto", "INFO", stream=terminal)
    logging.getLogger("syncd.test").warning("paused", extra={"connector": "sn"})
    assert "WARNING" in terminal.getvalue() and "connector=sn" in terminal.getvalue()
    pipe = io.StringIO()
    logs.configure("auto", "INFO", stream=pipe)
    logging.getLogger("syncd.test").warning("paused")
    assert json.loads(pipe.getvalue())["msg"] == "paused"


def test_an_exception_is_kept_on_the_same_line():
    stream = io.StringIO()
    logs.configure("json", "INFO", stream=stream)
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("syncd.test").exception("worker crashed")
    (line,) = stream.getvalue().splitlines()
    assert "ValueError: bad value" in json.loads(line)["exc"]
