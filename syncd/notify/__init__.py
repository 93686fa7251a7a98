"""Notifications: rows written by escalation (and status updates, tests), sent through apprise."""
