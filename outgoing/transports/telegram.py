"""Telegram Bot API: sendMessage (MarkdownV2, split at 4,096 characters), then sendDocument per file."""

import re
from functools import partial

from outgoing import formatting, http
from outgoing.errors import TransportError
from outgoing.transports.base import Transport

API_BASE = "https://api.telegram.org"
# "1-4096 characters after entities parsing": what counts is the text without our escapes.
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
# Bots may upload files up to 50 MB; bigger ones go as links in the text.
FILE_LIMIT = 50 * 1024 * 1024
# What @BotFather hands out: the bot's id, a colon, a URL-safe secret. The token goes into every
# URL path, so nothing else (a space, a slash, a query) may get there with it.
BOT_TOKEN = re.compile(r"^[0-9]+:[A-Za-z0-9_-]+$")


def _measure(run) -> int:
    return formatting.utf16_len(run[0])


class TelegramTransport(Transport):
    kind = "telegram"
    optional_config = ("chat_id", "api_base", "long_messages", "max_parts", "max_file_bytes", "silent")
    required_secrets = ("bot_token",)
    address_label = "chat id"
    default_max_parts = 5

    @classmethod
    def check(cls, config, secrets):
        chat = config.get("chat_id")
        if chat not in (None, "") and not isinstance(chat, (int, str)):
            yield "config", "config.chat_id: a number or @channelusername"
        token = secrets.get("bot_token") or ""
        if token and not BOT_TOKEN.match(token):
            yield "bot_token", "secrets.bot_token: looks like 123456:ABC-DEF… (from @BotFather)"

    def _url(self, method: str) -> str:
        base = (self.config.get("api_base") or API_BASE).rstrip("/")
        return f"{base}/bot{self.secrets['bot_token']}/{method}"

    def send(self, message, delivery) -> str:
        chat_id = self.recipient(delivery, "chat_id")
        template = self.config.get("template") or formatting.CHAT_TEMPLATE
        parts = formatting.runs(template, formatting.context(message))
        attachments = formatting.attachments_of(message)
        limit = self.config.get("max_file_bytes", FILE_LIMIT)
        files = [a for a in attachments if a.size <= limit]
        parts = formatting.with_links(parts, [a for a in attachments if a.size > limit])
        pieces = formatting.split_runs(parts or [("(empty message)", False)], limit=TEXT_LIMIT,
                                       measure=_measure, max_parts=self.max_parts)
        steps = [partial(self._send_text, chat_id, formatting.render_telegram(p)) for p in pieces]
        steps += [partial(self._send_document, chat_id, a) for a in files]
        return self.run_steps(delivery, steps)

    def _common(self, chat_id) -> dict:
        fields = {"chat_id": chat_id}
        if self.config.get("silent"):
            fields["disable_notification"] = True
        return fields

    def _send_text(self, chat_id, text: str) -> str:
        payload = {**self._common(chat_id), "text": text, "parse_mode": "MarkdownV2",
                   "link_preview_options": {"is_disabled": True}}
        return self._result(http.post_json(self._url("sendMessage"), payload, timeout=self.timeout))

    def _send_document(self, chat_id, attachment) -> str:
        caption = formatting.telegram_escape(attachment.filename[:CAPTION_LIMIT - 24])
        fields = {**self._common(chat_id), "caption": caption, "parse_mode": "MarkdownV2"}
        files = [("document", attachment.filename, attachment.content_type, formatting.read_attachment(attachment))]
        return self._result(http.post_multipart(self._url("sendDocument"), fields, files, timeout=self.timeout))

    @staticmethod
    def _result(response) -> str:
        data = response.json()
        if not isinstance(data, dict) or not data.get("ok"):
            raise TransportError(f"Telegram: unexpected answer: {http.error_text(response)}")
        return str((data.get("result") or {}).get("message_id", ""))
