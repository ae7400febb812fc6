"""The one call the pipeline's send stage makes per delivery, after ratelimit.take_token().

It sends through the service's transport and keeps the service's bookkeeping: last success,
last error, and the Retry-After block every other worker then honours.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from dataclasses import dataclass, field

from django.utils import timezone

from mailgate.crypto import CredentialsUnreadable
from outgoing import ratelimit
from outgoing.errors import TransportError, unexpected
from outgoing.models import Service
from outgoing.registry import transport_for

log = logging.getLogger(__name__)


def send(delivery, message=None, service=None, record_success: bool = True) -> str:
    """Send `delivery` (pipeline.Delivery, or SampleDelivery for a test) now; return the remote id.

    Raises TransportError (permanent or not, maybe with retry_after) for the caller to record on
    the delivery. Partial progress of multi-part sends is kept in delivery.remote_id: keep it when
    retrying, so the parts already sent are not sent again. With record_success=False the caller
    writes Service.last_success_at itself (the pipeline does, in the transaction that marks the
    delivery SENT, to save a write).
    """
    service = service or delivery.service
    message = message or delivery.message
    try:
        if not service.enabled:
            raise TransportError(f"service {service.name!r} is disabled", permanent=True)
        transport = transport_for(service)
        remote_id = transport.send(message, delivery)
    except CredentialsUnreadable:
        error = TransportError(f"the secrets of service {service.name!r} cannot be decrypted: enter them again",
                               permanent=True)
        record_failure(service, error)
        raise error from None
    except TransportError as error:
        record_failure(service, error)
        raise
    if record_success:
        Service.objects.filter(pk=service.pk).update(last_success_at=timezone.now())
    return remote_id or ""


def record_failure(service, error: TransportError, now=None) -> None:
    """Keep the service's last error and honour its Retry-After for every worker."""
    now = now or timezone.now()
    log.info("service %s (%s): %s", service.pk, service.kind, error.message)
    Service.objects.filter(pk=service.pk).update(last_error=error.message[:2000], last_error_at=now)
    if error.retry_after:
        ratelimit.block_for(service, error.retry_after, now=now)


@dataclass
class SampleMessage:
    """The admin's "Send test" message: the fields a transport reads from a pipeline message.
    Never stored or routed, and it has no attachments."""

    subject: str
    text_body: str
    date: datetime.datetime
    sender_name: str = "mailgate"
    sender_address: str = "test@mailgate.invalid"
    source: str = "import"  # what the webhook transport's payload says, as for an imported message
    source_label: str = "Send test"  # shown by templates as {source}
    html_body: str = ""
    markdown_body: str = ""
    snippet: str = ""
    message_id: str = ""
    to: list = field(default_factory=list)
    cc: list = field(default_factory=list)
    id: uuid.UUID = field(default_factory=uuid.uuid4)  # the webhook payload's message_id
    account_id = None
    channel_id = None

    @property
    def pk(self) -> uuid.UUID:
        return self.id

    def get_source_display(self) -> str:
        return self.source_label


@dataclass
class SampleDelivery:
    """The delivery a test send goes out for: progress is kept in memory only."""

    address: str
    id: uuid.UUID = field(default_factory=uuid.uuid4)  # also the webhook's Idempotency-Key
    remote_id: str = ""

    @property
    def pk(self) -> uuid.UUID:
        return self.id

    def record_progress(self, remote_id: str) -> None:
        self.remote_id = remote_id[:500]


def sample_message(service) -> SampleMessage:
    """What the admin's "Send test" sends through `service`."""
    now = timezone.now()
    return SampleMessage(
        subject="mailgate test message", date=now,
        text_body=f"This is a test message for the service \"{service.name}\", "
                  f"sent {now:%Y-%m-%d %H:%M:%S} UTC.\nIf you can read it, the service works.")


def send_test(service, address: str = "") -> tuple[bool, str]:
    """Send the sample message through `service` to `address` (or its config.test_address), even
    when the service is disabled. Returns (ok, text to show the admin)."""
    address = (address or (service.config or {}).get("test_address") or "").strip()
    message = sample_message(service)
    delivery = SampleDelivery(address=address)
    enabled, service.enabled = service.enabled, True
    try:
        remote_id = send(delivery, message=message, service=service)
    except TransportError as error:
        return False, _not_sent(error)
    except Exception as exc:  # a bug or a library's surprise: an answer on the page, not a 500
        log.exception("send test through service %s raised", service.pk)
        error = unexpected(exc)
        record_failure(service, error)
        return False, _not_sent(error)
    finally:
        service.enabled = enabled
    target = f" to {address}" if address else ""
    return True, f"Test message sent{target}" + (f" (remote id {remote_id})" if remote_id else "") + "."


def _not_sent(error: TransportError) -> str:
    wait = f" (the service asks to wait {error.retry_after:.0f} s)" if error.retry_after else ""
    return f"Test message not sent: {error.message}{wait}"
