"""On call: users, schedules, escalation policies and services, and the escalation module."""
