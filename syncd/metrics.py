"""Every Prometheus metric syncd exports, defined in one place (names are a public contract)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, PlatformCollector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

SYNC_CHANGES = Counter(
    "syncd_sync_changes_total", "Changes synced, by connector, direction (in/out) and outcome.",
    ["connector", "direction", "outcome"], registry=REGISTRY)
REMOTE_REQUESTS = Counter(
    "syncd_remote_requests_total", "HTTP requests made to remote systems.",
    ["connector", "operation", "status"], registry=REGISTRY)
REMOTE_REQUEST_SECONDS = Histogram(
    "syncd_remote_request_seconds", "Duration of remote HTTP requests.",
    ["connector", "operation"], registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
SYNC_LAG_SECONDS = Gauge(
    "syncd_sync_lag_seconds",
    "Seconds since the connector's last completed poll: how stale the store's view of it may be "
    "(grows while polls fail or the connector is paused).",
    ["connector"], registry=REGISTRY)
OUTBOX_PENDING = Gauge(
    "syncd_outbox_pending", "Outbox rows waiting to be delivered, per connector.",
    ["connector"], registry=REGISTRY)
DEAD_LETTERS = Gauge(
    "syncd_dead_letters", "Outbox rows that gave up and wait for an operator, per connector.",
    ["connector"], registry=REGISTRY)
CONFLICTS = Counter(
    "syncd_conflicts_total", "Fields changed on both sides since the last sync, resolved by policy.",
    ["connector", "field"], registry=REGISTRY)
MAPPING_RELOADS = Counter(
    "syncd_mapping_reloads_total", "Mapping file reloads, by outcome (applied/rejected).",
    ["outcome"], registry=REGISTRY)
CONNECTOR_PAUSED = Gauge(
    "syncd_connector_paused", "1 while a connector's inbound sync is paused for an operator.",
    ["connector"], registry=REGISTRY)
WORKER_RESTARTS = Counter(
    "syncd_worker_restarts_total", "Worker threads restarted after a crash.",
    ["worker"], registry=REGISTRY)
ACTIONS = Counter(
    "syncd_actions_total", "Custom Incident Action runs, by action and outcome "
    "(succeeded/failed/unknown).", ["action", "outcome"], registry=REGISTRY)
RESPONSE_RELOADS = Counter(
    "syncd_response_reloads_total", "Response file reloads, by outcome (applied/rejected).",
    ["outcome"], registry=REGISTRY)
WORKER_STATE = Gauge(
    "syncd_worker_up",
    "1 while a supervised loop works normally (running, or standing by for a lock another replica "
    "holds); 0 while it is restarting after a crash, stuck past its cycle timeout, or stopped.",
    ["worker"], registry=REGISTRY)
STUCK_CYCLES = Counter(
    "syncd_worker_stuck_cycles_total", "Loop cycles that ran longer than their timeout.",
    ["worker"], registry=REGISTRY)
HINTS_DROPPED = Counter(
    "syncd_hints_dropped_total",
    "Webhook hints dropped because the hint queue was full; the connector polls at once instead.",
    ["connector"], registry=REGISTRY)
ESCALATIONS = Counter(
    "syncd_escalations_total",
    "Escalation steps fired (a rule of a policy paged its targets), by service.",
    ["service"], registry=REGISTRY)
TIME_TO_ACKNOWLEDGE = Histogram(
    "syncd_time_to_acknowledge_seconds",
    "From the start of paging to the acknowledgement, by service.",
    ["service"], buckets=(30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400), registry=REGISTRY)
CLAIMS_RECOVERED = Counter(
    "syncd_claims_recovered_total",
    "In-flight rows taken back from a claimer that ended: reason process_gone (its process "
    "stopped beating) or lease_ended (its lease ran out).",
    ["queue", "reason"], registry=REGISTRY)
CLAIMS_ORPHANED = Gauge(
    "syncd_claims_orphaned",
    "In-flight rows whose claiming process is gone, waiting to be taken back.",
    ["queue"], registry=REGISTRY)
NOTIFICATIONS = Counter(
    "syncd_notifications_total",
    "Notification rows settled, by channel (mailto, json, slack, twilio…) and outcome: sent, "
    "failed (after the retries), unknown (may have gone; never resent), retried (a failed "
    "attempt that will be tried again).",
    ["channel", "outcome"], registry=REGISTRY)
PAGE_DELAY_SECONDS = Histogram(
    "syncd_page_delay_seconds", "From a page's due time to the moment it is sent.",
    registry=REGISTRY, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))
ALERTS_OPEN = Gauge(
    "syncd_alerts_open",
    "Alerts not resolved (triggered or acknowledged), by service; read from the store every 5 s, "
    "so every replica reports the same.",
    ["service"], registry=REGISTRY)
EVENTS = Counter(
    "syncd_events_total",
    "Events API v2 requests, by outcome: accepted, dropped (an acknowledge or resolve for no "
    "open alert), invalid, unknown_routing_key, rate_limited, too_large.",
    ["outcome"], registry=REGISTRY)
