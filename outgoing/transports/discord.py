"""Discord webhook: content up to 2,000 characters, an embed with the subject, files as multipart."""

import json
from functools import partial
from urllib.parse import urlsplit

from outgoing import formatting, http
from outgoing.transports.base import Transport

CONTENT_LIMIT = 2000
EMBED_TITLE_LIMIT = 256
FILES_PER_MESSAGE = 10
# Discord's upload limit for a webhook without server boosts.
FILE_LIMIT = 10 * 1024 * 1024


def _measure(run) -> int:
    # Discord counts the content as sent, markup included.
    return len(formatting.render_discord([run]))


class DiscordTransport(Transport):
    kind = "discord"
    optional_config = ("api_base", "username", "thread_id", "long_messages", "max_parts", "max_file_bytes",
                       "embed")
    required_secrets = ("webhook_url",)
    default_max_parts = 5

    @classmethod
    def check(cls, config, secrets):
        url = secrets.get("webhook_url")
        if url:
            problem = http.validate_url(url, "secrets.webhook_url")
            if problem or "/webhooks/" not in urlsplit(url).path:
                yield "webhook_url", problem or "secrets.webhook_url: expected …/api/webhooks/<id>/<token>"

    def _url(self) -> str:
        url = urlsplit(self.secrets["webhook_url"])
        base = (self.config.get("api_base") or f"{url.scheme}://{url.netloc}").rstrip("/")
        query = "wait=true"  # answer with the created message, so we learn its id
        if self.config.get("thread_id"):
            query += f"&thread_id={int(self.config['thread_id'])}"
        return f"{base}{url.path}?{query}"

    def send(self, message, delivery) -> str:
        values = formatting.context(message)
        template = self.config.get("template") or formatting.CHAT_TEMPLATE
        parts = formatting.runs(template, values)
        attachments = formatting.attachments_of(message)
        limit = self.config.get("max_file_bytes", FILE_LIMIT)
        files = [a for a in attachments if a.size <= limit][:FILES_PER_MESSAGE]
        parts = formatting.with_links(parts, [a for a in attachments if a not in files])
        pieces = formatting.split_runs(parts or [("(empty message)", False)], limit=CONTENT_LIMIT,
                                       measure=_measure, max_parts=self.max_parts)
        embed = None
        if self.config.get("embed", True) and message.subject:
            embed = {"title": message.subject[:EMBED_TITLE_LIMIT], "author": {"name": values["sender"][:256]},
                     "footer": {"text": values["source"][:2048]}}
            if message.date:
                embed["timestamp"] = message.date.isoformat()
        steps = []
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            steps.append(partial(self._post, formatting.render_discord(piece),
                                 embed if index == 0 else None, files if last else []))
        return self.run_steps(delivery, steps)

    def _post(self, content: str, embed, files) -> str:
        payload = {"content": content, "allowed_mentions": {"parse": []}}  # mail text never pings anyone
        if embed:
            payload["embeds"] = [embed]
        if self.config.get("username"):
            payload["username"] = self.config["username"][:80]
        if not files:
            response = http.post_json(self._url(), payload, timeout=self.timeout)
        else:
            payload["attachments"] = [{"id": i, "filename": a.filename} for i, a in enumerate(files)]
            uploads = [(f"files[{i}]", a.filename, a.content_type, formatting.read_attachment(a))
                       for i, a in enumerate(files)]
            response = http.post_multipart(self._url(), {"payload_json": json.dumps(payload)}, uploads,
                                           timeout=self.timeout)
        data = response.json()
        return str(data.get("id", "")) if isinstance(data, dict) else ""
