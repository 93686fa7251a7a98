"""syncd: incident-response daemon that keeps ServiceNow and Jira in step with its own store."""

__version__ = "0.1.0"
