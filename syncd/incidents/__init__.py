"""Incidents: their tables, canonical fields, store service and the commands people run."""
