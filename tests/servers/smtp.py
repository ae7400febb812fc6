"""An in-process SMTP sink (aiosmtpd) that records every message it accepts.

    with SmtpSink.start() as sink:
        smtplib.SMTP(sink.host, sink.port).sendmail(...)
        [msg] = sink.wait_for(1, timeout=5)

aiosmtpd's Controller runs its own event loop in its own thread, so the sink
works the same for sync code, asyncio code and Django's test server.
"""

from __future__ import annotations

import email
import email.policy
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from .ports import HOST, free_port, make_self_signed_cert


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes  # DATA exactly as received (dot-unstuffed, CRLF line ends)
    peer: tuple | None = None
    auth_user: str | None = None  # login used for AUTH, if any
    mail_options: list[str] = field(default_factory=list)  # e.g. SMTPUTF8, BODY=8BITMIME
    tls: bool = False  # whether the session had done STARTTLS

    @property
    def message(self) -> EmailMessage:
        """Parsed with policy.default (EmailMessage API: get_content(), etc.).

        Parsed from ``raw`` with CRLF turned into LF: the parser keeps body
        line endings as they are, and tests compare text with "\n". Use
        ``raw`` for byte-exact checks."""
        return email.message_from_bytes(self.raw.replace(b"\r\n", b"\n"), policy=email.policy.default)

    @property
    def message_compat32(self):
        """Parsed (CRLF -> LF) with the legacy compat32 policy (email.message.Message)."""
        return email.message_from_bytes(self.raw.replace(b"\r\n", b"\n"))

    @property
    def subject(self) -> str | None:
        return self.message["Subject"]


@dataclass
class _Failure:
    code: int
    text: str
    stage: str


class _Handler:
    def __init__(self, sink: "SmtpSink"):
        self.sink = sink

    def _maybe_fail(self, stage: str) -> str | None:
        with self.sink._cond:
            queue = self.sink._failures
            if queue and queue[0].stage == stage:
                f = queue.pop(0)
                self.sink.rejected += 1
                return f"{f.code} {f.text}"
        return None

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = self._maybe_fail("MAIL")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self._maybe_fail("RCPT")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = self._maybe_fail("DATA")
        if reply:
            return reply
        auth = session.auth_data
        login = auth.login.decode("utf-8", "replace") if isinstance(auth, LoginPassword) else None
        msg = ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            raw=bytes(envelope.original_content or envelope.content),
            peer=session.peer,
            auth_user=login,
            mail_options=list(envelope.mail_options),
            tls=session.ssl is not None,
        )
        with self.sink._cond:
            self.sink.messages.append(msg)
            self.sink._cond.notify_all()
        return "250 Message accepted for delivery"


class SmtpSink:
    """A recording SMTP server on 127.0.0.1:<free port>. Use :meth:`start`."""

    host = HOST

    def __init__(
        self,
        *,
        require_auth: bool = False,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        require_starttls: bool = False,
        auth_require_tls: bool | None = None,
    ):
        self.port = free_port()
        self.messages: list[ReceivedMessage] = []
        self.rejected = 0  # replies sent by fail_next()
        self.require_auth = require_auth
        self.username = username
        self.password = password
        self.cafile: str | None = None
        self._failures: list[_Failure] = []
        self._cond = threading.Condition()
        self._tmp: str | None = None
        self._controller: Controller | None = None

        kwargs: dict = {"enable_SMTPUTF8": True}
        if starttls or require_starttls:
            self._tmp = tempfile.mkdtemp(prefix="mailgate-smtp-")
            cert = make_self_signed_cert(self._tmp, "smtp")
            self.cafile = cert.cafile
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert.cert_path, cert.key_path)
            kwargs["tls_context"] = ctx
            kwargs["require_starttls"] = require_starttls
        if require_auth or username is not None:
            if username is None or password is None:
                raise ValueError("require_auth needs username and password")
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = require_auth
            # Realistic default: if TLS is on offer, AUTH only after STARTTLS.
            # Without TLS, allow AUTH in clear text so auth can be tested alone.
            kwargs["auth_require_tls"] = bool(starttls or require_starttls) if auth_require_tls is None else auth_require_tls
        self._smtp_kwargs = kwargs

    @classmethod
    def start(cls, **options) -> "SmtpSink":
        """Start a sink. Options: require_auth, username, password, starttls,
        require_starttls, auth_require_tls (see __init__)."""
        self = cls(**options)
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, **self._smtp_kwargs
        )
        try:
            self._controller.start()  # returns once the server answers
        except BaseException:
            self.stop()
            raise
        return self

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode("utf-8", "replace") == self.username
            and auth_data.password.decode("utf-8", "replace") == self.password
        )
        # handled=False: aiosmtpd then sends the 235/535 reply itself (the
        # default handled=True means "already replied" and the client hangs).
        # auth_data is what aiosmtpd stores in session.auth_data (-> auth_user).
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    # ------------------------------------------------------------ test API

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages arrived (since the last
        clear()); return a copy of all of them. Raises TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(
                    f"SMTP sink got {len(self.messages)} message(s), expected {count} within {timeout}s"
                )
            return list(self.messages)

    def clear(self) -> None:
        """Forget received messages and pending fail_next() replies."""
        with self._cond:
            self.messages.clear()
            self._failures.clear()
            self.rejected = 0

    def fail_next(self, n: int = 1, code: int = 451, text: str | None = None, stage: str = "DATA") -> None:
        """Reply ``code`` to the next ``n`` commands of ``stage`` ('MAIL',
        'RCPT' or 'DATA'). At DATA one failure == one message not accepted.
        4xx makes a sender retry, 5xx makes it bounce."""
        stage = stage.upper()
        if stage not in ("MAIL", "RCPT", "DATA"):
            raise ValueError(f"stage must be MAIL, RCPT or DATA, not {stage!r}")
        if text is None:
            text = "4.3.0 Try again later (test)" if 400 <= code < 500 else "5.7.1 Rejected (test)"
        with self._cond:
            self._failures.extend(_Failure(code, text, stage) for _ in range(n))

    def clear_failures(self) -> None:
        """Drop the replies fail_next() still had queued: the server is "back"."""
        with self._cond:
            self._failures.clear()

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            try:
                controller.stop()
            except AssertionError:
                pass  # aiosmtpd asserts if the loop already stopped
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "SmtpSink":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SmtpSink {self.host}:{self.port} messages={len(self.messages)}>"
