"""Telegram: a bot's Update as JSON, authenticated by the secret token given to setWebhook
(X-Telegram-Bot-Api-Secret-Token). With the bot's token, photos and files are downloaded too."""

from __future__ import annotations

import datetime
import json

from django.http import JsonResponse
from django.utils import timezone

from inbound import receive, telegram_files
from inbound.channels.base import Channel, Reject, read_body
from outgoing import signatures
from outgoing.http import validate_url
from pipeline.senders import TELEGRAM_DOMAIN

MESSAGE_KEYS = ("message", "edited_message", "channel_post", "edited_channel_post")
# Content without a file (files: inbound/telegram_files.py), noted in the text.
NOTES = {"location": "location", "venue": "venue", "contact": "contact", "poll": "poll", "dice": "dice"}


def update_id(update) -> int:
    if not isinstance(update, dict) or not isinstance(update.get("update_id"), int) \
            or isinstance(update.get("update_id"), bool):
        raise receive.BadPayload("update_id: missing or not a number")
    return update["update_id"]


class TelegramChannel(Channel):
    kind = "telegram"
    required_secrets = ("secret_token",)
    optional_secrets = ("bot_token",)
    secret_labels = {"secret_token": "Telegram secret token (setWebhook secret_token)",
                     "bot_token": "Telegram bot token (optional: to download photos and files sent to the bot)"}
    config_keys = ("api_base",)  # a self-hosted Bot API server, for the file downloads

    @classmethod
    def check_config(cls, config):
        if "api_base" in config:
            error = validate_url(config["api_base"], "config.api_base")
            if error:
                yield error

    def handle(self, request):
        # The secret token is a header: checked before the body is even read.
        expected = self.secrets.get("secret_token") or ""
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not expected or not signatures.equal(given, expected):
            raise Reject(403, "bad secret token")
        body = read_body(request)
        try:
            update = json.loads(body)
        except ValueError:
            raise Reject(400, "not JSON") from None
        self.receive(update)
        return JsonResponse({"ok": True})

    def receive(self, update: dict):
        """A Telegram Update → (Message, created), or (None, False) for updates that carry no
        message (button presses, member changes): Telegram only needs them acknowledged. With
        the bot's token, the message's photo or file is downloaded and attached."""
        channel = self.channel
        number = update_id(update)
        key = next((k for k in MESSAGE_KEYS if isinstance(update.get(k), dict)), None)
        if key is None:
            return None, False
        identity = f"tg:{number}"
        if (known := receive.stored(channel, identity)) is not None:
            return known, False
        tg = update[key]
        chat = tg.get("chat") if isinstance(tg.get("chat"), dict) else {}
        user = tg.get("from") if isinstance(tg.get("from"), dict) else {}
        name = " ".join(str(user.get(k) or "") for k in ("first_name", "last_name")).strip()
        if user.get("username"):
            name = f"{name} (@{user['username']})" if name else f"@{user['username']}"
        sender_id = user.get("id") or chat.get("id") or "unknown"
        name = name or str(chat.get("title") or sender_id)
        text = str(tg.get("text") or tg.get("caption") or "")
        attachments, notes = telegram_files.fetch_all(channel, tg, self.secrets.get("bot_token", ""))
        notes += [f"[{label}]" for field, label in NOTES.items() if field in tg]
        if notes:
            text = (text + "\n\n" if text else "") + " ".join(notes)
        subject = f"Telegram from {name}"
        if chat.get("type") not in (None, "private") and chat.get("title"):
            subject += f" in {chat['title']}"
        if key.startswith("edited"):
            subject += " (edited)"
        try:
            date = datetime.datetime.fromtimestamp(int(tg.get("date") or 0), tz=datetime.timezone.utc)
        except (TypeError, ValueError, OverflowError, OSError):
            date = timezone.now()
        chat_id, tg_id = chat.get("id", "0"), tg.get("message_id", "0")
        reply = tg.get("reply_to_message") if isinstance(tg.get("reply_to_message"), dict) else {}
        raw = receive.build_raw(
            from_name=name, from_address=f"tg-{receive.UNSAFE_ID.sub('_', str(sender_id))}@{TELEGRAM_DOMAIN}",
            channel=channel, subject=subject, text=text, date=date,
            # Edits get their own id; replies thread under the message they answer.
            msgid=receive.message_id("tg", channel, chat_id, tg_id,
                                     *([f"u{number}"] if key.startswith("edited") else [])),
            in_reply_to=(receive.message_id("tg", channel, chat_id, reply["message_id"])
                         if reply.get("message_id") else ""),
            extra_headers={"X-Mailgate-Telegram-Chat": str(chat_id)}, attachments=attachments,
        )
        return receive.ingest(channel, identity, raw)
