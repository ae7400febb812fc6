"""SMTP: the relayed message as a new email (text, HTML alternative, attachments) to one address."""

import hashlib
import smtplib
import socket
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils import timezone
from django.utils.text import slugify

from mailgate.net import is_loopback
from outgoing import egress, formatting, keepalive
from outgoing.errors import TransportError
from outgoing.relay import prior_marks, relay_header_value
from outgoing.tls import tls_context
from outgoing.transports.base import Transport

SECURITY = ("ssl", "starttls", "none")
DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}
# Bigger than this in total and attachments go as links instead (most servers refuse ~25 MB).
DEFAULT_MAX_ATTACHMENT_BYTES = 15 * 1024 * 1024

class CheckedSMTP(smtplib.SMTP):
    """smtplib's client, its socket opened by outgoing.egress (refusing private addresses on the
    address it connects to). STARTTLS still checks the certificate against the host name."""

    def _get_socket(self, host, port, timeout):
        return egress.connect(host, port, timeout, self.source_address)


class CheckedSMTPSSL(smtplib.SMTP_SSL, CheckedSMTP):
    """SMTP_SSL wraps the socket its parent's _get_socket makes: CheckedSMTP's, by this order."""


class SmtpTransport(Transport):
    kind = "smtp"
    required_config = ("host", "from_address")
    optional_config = ("port", "security", "username", "from_name", "reply_to", "list_id", "subject_prefix",
                       "cafile", "max_attachment_bytes")
    optional_secrets = ("password",)
    address_label = "email address"

    @classmethod
    def check(cls, config, secrets):
        security = config.get("security", "starttls")
        if security not in SECURITY:
            yield "config", f"config.security: one of {', '.join(SECURITY)}"
        port = config.get("port", DEFAULT_PORTS.get(security, 587))
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            yield "config", "config.port: a port number from 1 to 65535"
        for key in ("from_address", "reply_to", "test_address"):
            if config.get(key):
                try:
                    validate_email(config[key])
                except ValidationError:
                    yield "config", f"config.{key}: not an email address"
        if config.get("username") and not secrets.get("password"):
            yield "password", "secrets.password: required when config.username is set"
        if (security == "none" and config.get("username") and config.get("host")
                and not is_loopback(str(config["host"]))):
            yield "config", "config.security: a password is only sent unencrypted to a loopback host"
        if isinstance(config.get("host"), str) and config["host"]:
            problem = egress.host_problem(config["host"])
            if problem:
                yield "config", f"config.host: {problem}"
        for key, value in config.items():
            if isinstance(value, str) and ("\r" in value or "\n" in value):
                yield "config", f"config.{key}: must not contain a line break"

    def build(self, message, delivery) -> EmailMessage:
        values = formatting.context(message)
        to = self.recipient(delivery, "test_address")
        from_name = self.config.get("from_name") or f"{values['sender']} via {values['source']}"
        list_id = self.config.get("list_id") or (
            f"{slugify(self.service.name) or 'service'}.{slugify(settings.MAILGATE_INSTANCE_ID) or 'mailgate'}"
            ".mailgate.invalid")
        headers = {
            "From": from_name,
            "To": to,
            "Subject": (self.config.get("subject_prefix") or "") + (message.subject or "(no subject)"),
            "Reply-To": self.config.get("reply_to") or message.sender_address or "",
            "List-Id": f"{self.service.name} <{list_id}>",
            # Earlier installs' marks first, then ours: loops between installs are caught too.
            settings.MAILGATE_RELAY_HEADER: ", ".join([*prior_marks(message), relay_header_value(delivery.pk)]),
            # Threads the relayed copies in the subscriber's mail client like the original.
            "References": message.message_id if (message.message_id or "").startswith("<") else "",
        }
        for name, value in headers.items():
            # A line break would let a message's own text add headers (or recipients) to ours.
            if "\r" in value or "\n" in value:
                raise TransportError(f"refusing to send: the {name} header would contain a line break",
                                     permanent=True)
        email = EmailMessage()
        headers["From"] = Address(display_name=from_name, addr_spec=self.config["from_address"])
        for name, value in headers.items():
            if value:
                email[name] = value
        email["Date"] = format_datetime(message.date or timezone.now())
        # From the delivery's id, so every attempt of one delivery has the same Message-ID: a retry
        # after an unknown outcome (the connection lost after DATA) is a recognisable duplicate.
        domain = self.config["from_address"].rpartition("@")[2]
        email["Message-ID"] = f"<{delivery.pk}@{domain}>" if domain and delivery.pk else make_msgid()
        template = self.config.get("template") or formatting.EMAIL_TEMPLATE
        text = formatting.plain(formatting.runs(template, values))
        attachments = formatting.attachments_of(message)
        limit = self.config.get("max_attachment_bytes", DEFAULT_MAX_ATTACHMENT_BYTES)
        as_files = attachments if sum(a.size for a in attachments) <= limit else []
        if attachments and not as_files:
            text += "\n\n" + formatting.attachment_lines(attachments)
        email.set_content(text or " ")
        if message.html_body:
            email.add_alternative(message.html_body, subtype="html")
        for attachment in as_files:
            maintype, _, subtype = (attachment.content_type or "application/octet-stream").partition("/")
            email.add_attachment(formatting.read_attachment(attachment), maintype=maintype or "application",
                                 subtype=subtype or "octet-stream", filename=attachment.filename)
        return email

    def send(self, message, delivery) -> str:
        email = self.build(message, delivery)
        to = email["To"].addresses[0].addr_spec
        try:
            self._send(email, to)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            raise _error(code, text, "recipient refused") from None
        except smtplib.SMTPAuthenticationError as exc:
            raise TransportError(f"SMTP authentication failed: {exc.smtp_code} {_text(exc.smtp_error)}",
                                 permanent=True) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise TransportError(f"SMTP server does not support it: {exc}", permanent=True) from None
        except smtplib.SMTPResponseException as exc:
            raise _error(exc.smtp_code, exc.smtp_error, "SMTP error") from None
        except ssl.SSLCertVerificationError as exc:
            raise TransportError(f"TLS certificate of {self.config['host']} not trusted: {exc.verify_message}",
                                 permanent=True) from None
        except (smtplib.SMTPException, OSError, socket.timeout) as exc:
            raise TransportError(f"SMTP connection to {self.config['host']} failed: {exc or type(exc).__name__}") \
                from None
        return email["Message-ID"]

    def _send(self, email: EmailMessage, to: str) -> None:
        """One message in a session kept from the last send to the same server and login, if one is
        (outgoing/keepalive.py), else in a new one; the session is kept for the next send once
        the message is accepted. A send batch to one server then pays for one connection, EHLO,
        STARTTLS and AUTH, not one each. A kept session the server has ended meanwhile (its idle
        timeout) is found before use, or fails at the next command, and is replaced once."""

        def use(session):
            session.settimeout(self.timeout)  # this service's, not the one it was opened for
            session.send_message(email, from_addr=self.config["from_address"], to_addrs=[to])
            return None, True

        keepalive.exchange(self._session_key(), lambda: _Session(self._connect()), use, _ended_by_the_server)

    def _session_key(self) -> tuple:
        """Everything a session was opened and logged in with (the password as a digest)."""
        security = self.config.get("security", "starttls")
        context = tls_context(self.config.get("cafile")) if security in ("ssl", "starttls") else None
        password = hashlib.sha256(self.secrets.get("password", "").encode()).hexdigest()
        return ("smtp", self.config["host"], self.config.get("port", DEFAULT_PORTS[security]), security,
                id(context), self.config.get("username", ""), password, egress.private_allowed())

    def _connect(self) -> smtplib.SMTP:
        host, security = self.config["host"], self.config.get("security", "starttls")
        port = self.config.get("port", DEFAULT_PORTS[security])
        # Only TLS needs a context; security "none" never loads the CA store.
        context = tls_context(self.config.get("cafile")) if security in ("ssl", "starttls") else None
        if security == "ssl":
            smtp = CheckedSMTPSSL(host, port, timeout=self.timeout, context=context)
        else:
            smtp = CheckedSMTP(host, port, timeout=self.timeout)
        try:
            if security == "starttls":
                smtp.starttls(context=context)
            if self.config.get("username"):
                smtp.login(self.config["username"], self.secrets.get("password", ""))
        except BaseException:
            smtp.close()
            raise
        return smtp


class _Session:
    """An open SMTP session as outgoing/keepalive.py keeps it: closing says QUIT when it can."""

    def __init__(self, smtp: smtplib.SMTP):
        self.smtp = smtp

    @property
    def sock(self):
        return self.smtp.sock

    def send_message(self, *args, **kwargs):
        return self.smtp.send_message(*args, **kwargs)

    def settimeout(self, seconds: float) -> None:
        self.smtp.timeout = seconds
        if self.smtp.sock is not None:
            self.smtp.sock.settimeout(seconds)

    def close(self) -> None:
        try:
            if self.smtp.sock is not None:
                self.smtp.sock.settimeout(QUIT_SECONDS)
            self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            self.smtp.close()


# A polite QUIT must not hold up the next send.
QUIT_SECONDS = 2.0
def _ended_by_the_server(exc: BaseException) -> bool:
    """What a kept session the server ended raises at our next command: the connection gone, or a
    421 (the server is closing the session)."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    return isinstance(exc, (smtplib.SMTPServerDisconnected, BrokenPipeError, ConnectionResetError, ssl.SSLEOFError))


def _error(code, text, what) -> TransportError:
    # 4xx is "try again later" in SMTP; 5xx is final.
    return TransportError(f"{what}: {code} {_text(text)}", permanent=500 <= int(code) < 600)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

