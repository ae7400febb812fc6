"""Slack incoming webhook: one mrkdwn message; attachments as links (incoming webhooks take no files)."""

from urllib.parse import urlsplit

from outgoing import formatting, http
from outgoing.errors import TransportError
from outgoing.transports.base import Transport

# Slack truncates text beyond 40,000 characters; we cut first and say so.
TEXT_LIMIT = 40000


def _measure(run) -> int:
    return len(formatting.render_slack([run]))


class SlackTransport(Transport):
    kind = "slack"
    optional_config = ("api_base",)
    required_secrets = ("webhook_url",)

    @classmethod
    def check(cls, config, secrets):
        url = secrets.get("webhook_url")
        if url:
            problem = http.validate_url(url, "secrets.webhook_url")
            if problem:
                yield "webhook_url", problem

    def _url(self) -> str:
        url = urlsplit(self.secrets["webhook_url"])
        base = (self.config.get("api_base") or f"{url.scheme}://{url.netloc}").rstrip("/")
        return f"{base}{url.path}"

    def send(self, message, delivery) -> str:
        template = self.config.get("template") or formatting.CHAT_TEMPLATE
        parts = formatting.runs(template, formatting.context(message))
        parts = formatting.with_links(parts, formatting.attachments_of(message))
        [piece] = formatting.split_runs(parts or [("(empty message)", False)], limit=TEXT_LIMIT,
                                        measure=_measure, max_parts=1)
        payload = {"text": formatting.render_slack(piece), "mrkdwn": True,
                   "unfurl_links": False, "unfurl_media": False}
        response = http.post_json(self._url(), payload, timeout=self.timeout)
        # Incoming webhooks answer 200 with the plain text "ok"; anything else is an error text.
        answer = response.body.decode("utf-8", "replace").strip()
        if answer and answer != "ok":
            raise TransportError(f"Slack: {answer[:300]}", permanent=True)
        return ""
