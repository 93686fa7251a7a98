"""The notification sender: a supervised loop that sends due notification rows through apprise.

One cycle: (a) rows stuck in ``sending`` past their deadline become ``unknown``; (b) due rows are
claimed (SKIP LOCKED, throttled per contact) and the claim COMMITS; (c) the messages go out in
parallel, outside any transaction, each bounded by ``send_timeout``; (d) the outcomes are recorded
as they come in, those that finished together in one transaction, only while each claim token
still matches. A crash between (b) and (d)
leaves rows sending; the next cycle after their deadline, here or on another replica, marks them
unknown. Nothing is ever sent twice by syncd's own doing (DESIGN.md invariant 6).
"""

from __future__ import annotations

import logging
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import timedelta
from typing import Callable

from sqlalchemy.orm import Session, sessionmaker

from syncd.clock import Clock
from syncd.metrics import NOTIFICATIONS, PAGE_DELAY_SECONDS
from syncd.notify import channels, service, throttle
from syncd.notify.channels import Delivery
from syncd.response_files import ResponseSet
from syncd.store.db import transaction

log = logging.getLogger(__name__)

Deliver = Callable[..., Delivery]
# After the first send of a batch finishes, the others that finish this soon after are recorded in
# the same transaction: one commit for many outcomes, and an outcome waits at most this long.
SETTLE_GATHER_SECONDS = 0.02


class NotificationSender:
    def __init__(self, *, sessions: sessionmaker[Session], clock: Clock,
                 responses: Callable[[], ResponseSet], worker_id: str,
                 send_timeout: float = 10.0, max_attempts: int = 3, retry_delay: float = 15.0,
                 deliver: Deliver = channels.deliver, rate: throttle.Rate = throttle.DEFAULT_RATE,
                 batch_size: int = 200, parallel_sends: int = 8):
        self.sessions = sessions
        self.clock = clock
        self.responses = responses
        self.worker_id = worker_id
        self.send_timeout = send_timeout
        self.max_attempts = max_attempts
        self.retry_delay = timedelta(seconds=retry_delay)
        self.deliver = deliver
        self.rate = rate
        self.batch_size = batch_size
        self.parallel_sends = parallel_sends

    def cycle(self) -> bool:
        """One pass; True when more rows were due than one batch takes (call again at once)."""
        with transaction(self.sessions) as session:
            stuck = service.expire_stuck(session=session, now=self.clock.now(),
                                         channel=self._channel)
        self._count(stuck)
        with transaction(self.sessions) as session:
            claims = service.claim_due(session=session, now=self.clock.now(),
                                       worker_id=self.worker_id, send_timeout=self.send_timeout,
                                       rate=self.rate, limit=self.batch_size)
        self.send(claims)
        return sum(len(claim.tokens) for claim in claims) >= self.batch_size

    def send(self, claims: list[service.Claim]) -> list[Delivery]:
        """Send claimed messages (committed claims only) and record each outcome."""
        if not claims:
            return []
        outcomes: dict[int, Delivery] = {}
        with ThreadPoolExecutor(max_workers=min(self.parallel_sends, len(claims)),
                                thread_name_prefix="notify-send") as pool:
            running: dict[Future, service.Claim] = {
                pool.submit(self._deliver, claim): claim for claim in claims}
            while running:
                wait(running, return_when=FIRST_COMPLETED)
                done, _ = wait(running, timeout=SETTLE_GATHER_SECONDS)
                finished = [(running.pop(future), *future.result()) for future in done]
                self._settle(finished)
                outcomes.update({id(claim): delivery for claim, _, delivery in finished})
        return [outcomes[id(claim)] for claim in claims]

    def _deliver(self, claim: service.Claim) -> tuple[str | None, Delivery]:
        """One message out: (its contact URL, or None when there is none now; the outcome).
        Never raises: an error before the send is a failure (safe to retry), one from the
        channel an unknown outcome (it may have gone)."""
        try:
            url, missing = self._url(claim.user_id, claim.contact)
            started = self.clock.now()
            for due_at in claim.due_at.values():
                if claim.kind == "page":
                    PAGE_DELAY_SECONDS.observe(max((started - due_at).total_seconds(), 0.0))
        except Exception as error:
            log.exception("preparing notification rows %s failed", claim.ids)
            return None, Delivery("failed", f"not sent: {type(error).__name__}: {error}", 0.0)
        if url is None:
            return None, Delivery("failed", missing or "no contact URL", 0.0)
        try:
            return url, self.deliver(url, title=claim.subject, body=claim.body,
                                     timeout=self.send_timeout)
        except Exception as error:    # whether it went is not known: never resend it
            log.exception("delivering notification rows %s raised", claim.ids)
            return url, Delivery("unknown", f"the channel raised {type(error).__name__}", 0.0)

    def _settle(self, finished: list[tuple[service.Claim, str | None, Delivery]]) -> None:
        """Record the outcomes in one transaction; if that fails, each in its own, so one bad
        row cannot lose the others' outcomes (a row left unrecorded turns unknown after its
        deadline, never resent)."""
        try:
            with transaction(self.sessions) as session:
                settled = [row for claim, url, delivery in finished
                           for row in self._settle_one(session, claim, url, delivery)]
        except Exception:
            log.exception("recording %d send outcomes together failed; recording them one by "
                          "one", len(finished))
            settled = []
            for claim, url, delivery in finished:
                try:
                    with transaction(self.sessions) as session:
                        settled += self._settle_one(session, claim, url, delivery)
                except Exception:
                    log.exception("recording the outcome of notification rows %s failed; they "
                                  "will turn unknown after their deadline", claim.ids)
        self._count(settled)
        for claim, _, delivery in finished:
            log.info("notification %s to %s by %s: %s (%s)", claim.ids, claim.user_id,
                     claim.contact, delivery.outcome, delivery.detail,
                     extra={"notification_ids": claim.ids, "outcome": delivery.outcome})

    def _settle_one(self, session: Session, claim: service.Claim, url: str | None,
                    delivery: Delivery) -> list[service.Settled]:
        return service.settle(session=session, claim=claim, delivery=delivery,
                              channel=channels.channel_of(url) if url else "none",
                              now=self.clock.now(), retry=url is not None,
                              max_attempts=self.max_attempts, retry_delay=self.retry_delay)

    def _url(self, user_id: str, contact: str) -> tuple[str | None, str | None]:
        """The contact's URL in the CURRENT response files, or why there is none."""
        user = self.responses().users.get(user_id)
        if user is None:
            return None, f"user {user_id} is no longer in the response files"
        url = user.contacts.get(contact)
        if url is None:
            return None, f"user {user_id} has no contact {contact!r} any more"
        return url, None

    def _channel(self, user_id: str, contact: str) -> str:
        url, _ = self._url(user_id, contact)
        return channels.channel_of(url) if url else "none"

    @staticmethod
    def _count(settled: list[service.Settled]) -> None:
        for row in settled:
            NOTIFICATIONS.labels(channel=row.channel, outcome=row.outcome).inc()
