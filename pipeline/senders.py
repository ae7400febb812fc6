"""Who a sender is: every identifier an address stands for, so a subscriber listed by phone number
or chat id is recognised as the sender of a message that came in by SMS or Telegram.

Inbound calls (inbound/) give their senders addresses in reserved .invalid domains (RFC 2606),
e.g. +15551234567@sms.mailgate.invalid or tg-4242@telegram.mailgate.invalid.
"""

SMS_DOMAIN = "sms.mailgate.invalid"
TELEGRAM_DOMAIN = "telegram.mailgate.invalid"
WEBHOOK_DOMAIN = "webhook.mailgate.invalid"
SYNTHETIC_DOMAINS = (SMS_DOMAIN, TELEGRAM_DOMAIN, WEBHOOK_DOMAIN)


def sender_ids(address: str) -> set[str]:
    """Every identifier a sender address stands for: the address itself and, for the synthetic
    addresses, the phone number or Telegram id in its local part."""
    address = (address or "").strip().lower()
    ids = {address} if address else set()
    local, _, domain = address.rpartition("@")
    if domain in SYNTHETIC_DOMAINS and local:
        ids.add(local)
        if local.startswith("tg-"):
            ids.add(local[3:])
    return ids
