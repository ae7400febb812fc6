"""Service kind → transport class path. Adding a kind is one line here and one small module."""

from django.utils.module_loading import import_string

TRANSPORTS = {
    "smtp": "outgoing.transports.smtp.SmtpTransport",
    "webhook": "outgoing.transports.webhook.WebhookTransport",
    "telegram": "outgoing.transports.telegram.TelegramTransport",
    "discord": "outgoing.transports.discord.DiscordTransport",
    "slack": "outgoing.transports.slack.SlackTransport",
    "twilio": "outgoing.transports.twilio.TwilioTransport",
}


def transport_class(kind: str):
    try:
        return import_string(TRANSPORTS[kind])
    except KeyError:
        raise ValueError(f"unknown service kind {kind!r}; known: {', '.join(sorted(TRANSPORTS))}") from None


def transport_for(service):
    return transport_class(service.kind)(service)
