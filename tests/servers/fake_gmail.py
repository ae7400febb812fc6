"""A tiny Gmail-flavoured IMAP server on loopback, for the Gmail sync tests.

There is no Gmail here and Dovecot has no X-GM-EXT-1, so this speaks just enough IMAP4rev1 over a
real socket for imap/sync.py (imaplib via imap-tools) to run unmodified: CAPABILITY with X-GM-EXT-1,
LOGIN, LIST with Gmail's special-use attributes, SELECT/EXAMINE with UIDVALIDITY/UIDNEXT, UID SEARCH,
UID FETCH (X-GM-MSGID, X-GM-THRID, X-GM-LABELS, FLAGS, RFC822.SIZE, INTERNALDATE, BODY.PEEK[...] with
partial ranges), LOGOUT. FETCH responses are shaped like Google's IMAP extensions document:
the X-GM items first, then the rest; labels go out exactly as the test wrote them (atoms, quoted
strings, modified UTF-7), bodies as literals. Anything else is answered BAD, so a new command in
sync shows up as a failing test rather than a silent pass.
"""

from __future__ import annotations

import re
import socketserver
import threading
from dataclasses import dataclass, field

CAPABILITIES = ("IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 UIDPLUS "
                "ENABLE MOVE SPECIAL-USE LIST-EXTENDED")
_COMMAND = re.compile(r"^(\S+) (UID )?(\S+) ?(.*)$", re.IGNORECASE)
_FETCH_ITEM = re.compile(r"BODY\.PEEK\[([^\]]*)\](?:<(\d+)\.(\d+)>)?|[A-Z0-9.\-]+", re.IGNORECASE)


@dataclass
class Mail:
    uid: int
    raw: bytes  # CRLF line ends, as a server stores them
    msgid: int
    thrid: int
    labels: str  # the inside of the X-GM-LABELS list, verbatim on the wire
    flags: str = ""
    internaldate: str = "17-Jul-1996 02:44:25 -0700"


@dataclass
class Mailbox:
    attributes: str
    uidvalidity: int
    next_uid: int = 1
    mails: list = field(default_factory=list)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True  # a session a client left open must not keep the test process alive


class FakeGmail:
    """`with FakeGmail("user", "pw") as gmail:` listens on 127.0.0.1:`gmail.port` until the block
    ends. `commands` logs every command line received; `bodies_sent` every (mailbox, uid) whose
    BODY[] went out."""

    def __init__(self, user: str, password: str):
        self.user, self.password = user, password
        self.lock = threading.Lock()
        self.commands: list[str] = []
        self.bodies_sent: list[tuple[str, int]] = []
        self.mailboxes = {"INBOX": Mailbox("\\HasNoChildren", 1), "[Gmail]": Mailbox("\\HasChildren \\Noselect", 0),
                          "[Gmail]/All Mail": Mailbox("\\HasNoChildren \\All", 11),
                          "[Gmail]/Sent Mail": Mailbox("\\HasNoChildren \\Sent", 12)}
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            wbufsize = -1  # buffered: one flush per command, not one small packet per line

            def handle(self):
                _Session(fake, self.rfile, self.wfile).run()

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-gmail", daemon=True)

    def __enter__(self) -> "FakeGmail":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def add(self, mailbox: str, raw: bytes, *, msgid: int, thrid: int, labels: str = "", flags: str = "") -> int:
        """Put a message (Gmail: a label) into `mailbox`; returns its UID."""
        with self.lock:
            box = self.mailboxes[mailbox]
            box.mails.append(Mail(box.next_uid, raw, msgid, thrid, labels, flags))
            box.next_uid += 1
            return box.next_uid - 1

    def relabel(self, msgid: int, labels: str) -> None:
        """Gmail labels belong to the message: every folder's copy changes at once."""
        with self.lock:
            for box in self.mailboxes.values():
                for mail in box.mails:
                    if mail.msgid == msgid:
                        mail.labels = labels

    def renumber(self, mailbox: str, uidvalidity: int, first_uid: int = 1) -> None:
        """What a server does when it rebuilds a folder: new UIDVALIDITY, every UID new."""
        with self.lock:
            box = self.mailboxes[mailbox]
            box.uidvalidity, box.next_uid = uidvalidity, first_uid
            for mail in box.mails:
                mail.uid, box.next_uid = box.next_uid, box.next_uid + 1


def _uids(spec: str, mails: list[Mail]) -> set[int]:
    top = max((m.uid for m in mails), default=0)
    wanted = set()
    for part in spec.split(","):
        low, _, high = part.partition(":")
        low, high = (top if x == "*" else int(x) for x in (low, high or low))
        wanted.update(m.uid for m in mails if min(low, high) <= m.uid <= max(low, high))
    return wanted


def _literal(name: str, data: bytes) -> bytes:
    return f"{name} {{{len(data)}}}\r\n".encode() + data


class _Session:
    def __init__(self, fake: FakeGmail, rfile, wfile):
        self.fake, self.rfile, self.wfile = fake, rfile, wfile
        self.box: Mailbox | None = None
        self.box_name = ""

    def send(self, line, flush: bool = False) -> None:
        self.wfile.write(line if isinstance(line, bytes) else (line + "\r\n").encode())
        if flush:
            self.wfile.flush()

    def run(self) -> None:
        self.send("* OK Gimap ready for requests from 127.0.0.1 fake", flush=True)
        while line := self.rfile.readline():
            text = line.decode("utf-8").rstrip("\r\n")
            with self.fake.lock:
                self.fake.commands.append(text)
                tag, uid, name, args = (_COMMAND.match(text) or _COMMAND.match("* BAD")).groups()
                handler = getattr(self, "do_" + ("uid_" if uid else "") + name.lower(), None)
                self.send(f"{tag} {handler(args) if handler else f'BAD unknown command {name}'}", flush=True)
            if name.upper() == "LOGOUT":
                return

    def do_capability(self, args):
        self.send(f"* CAPABILITY {CAPABILITIES}")
        return "OK Success"

    def do_login(self, args):
        if [a.strip('"') for a in args.split()] == [self.fake.user, self.fake.password]:
            return f"OK {self.fake.user} authenticated (Success)"
        return "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"

    def do_list(self, args):
        for name, box in self.fake.mailboxes.items():
            self.send(f'* LIST ({box.attributes}) "/" "{name}"')
        return "OK Success"

    def do_select(self, args, readonly=False):
        self.box_name = args.strip('"')
        self.box = self.fake.mailboxes.get(self.box_name)
        if self.box is None or "\\Noselect" in self.box.attributes:
            return "NO [NONEXISTENT] Unknown Mailbox (Failure)"
        box = self.box
        for line in ("* FLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen $NotPhishing $Phishing)",
                     "* OK [PERMANENTFLAGS ()] Flags permitted.", f"* OK [UIDVALIDITY {box.uidvalidity}] UIDs valid.",
                     f"* {len(box.mails)} EXISTS", "* 0 RECENT", f"* OK [UIDNEXT {box.next_uid}] Predicted next UID."):
            self.send(line)
        return f"OK [{'READ-ONLY' if readonly else 'READ-WRITE'}] {self.box_name} selected. (Success)"

    def do_examine(self, args):
        return self.do_select(args, readonly=True)

    def do_logout(self, args):
        self.send("* BYE LOGOUT Requested")
        return "OK 73 good day (Success)"

    def do_uid_search(self, args):
        words = args.split()
        if self.box is None or len(words) != 2 or words[0].upper() != "UID":
            return "BAD only UID SEARCH UID <set> is supported"
        self.send("* SEARCH " + " ".join(map(str, sorted(_uids(words[1], self.box.mails)))))
        return "OK SEARCH completed (Success)"

    def do_uid_fetch(self, args):
        spec, _, items = args.partition(" ")
        if self.box is None or not items.startswith("(") or "CHANGEDSINCE" in items.upper():
            return "BAD unsupported FETCH"
        wanted, asked = _uids(spec, self.box.mails), self._gmail_first(list(_FETCH_ITEM.finditer(items[1:-1])))
        try:
            lines = [b"* %d FETCH (" % seq + b" ".join(self._item(mail, m) for m in asked) + b")\r\n"
                     for seq, mail in enumerate(self.box.mails, 1) if mail.uid in wanted]
        except KeyError as exc:
            return f"BAD unsupported FETCH item {exc}"
        for line in lines:
            self.send(line)
        return "OK Success"

    @staticmethod
    def _gmail_first(asked):
        # Google's examples answer X-GM-THRID, X-GM-MSGID and X-GM-LABELS before UID and the rest.
        names = {m.group(0).upper(): m for m in asked}
        gm = [names[n] for n in ("X-GM-THRID", "X-GM-MSGID", "X-GM-LABELS") if n in names]
        return gm + [m for m in asked if m not in gm]

    def _item(self, mail: Mail, m) -> bytes:
        name = m.group(0).upper()
        if name.startswith("BODY.PEEK["):
            section = m.group(1).upper()
            header, _, text = mail.raw.partition(b"\r\n\r\n")
            data = {"": mail.raw, "HEADER": header + b"\r\n\r\n", "TEXT": text}[section]
            if section == "":
                self.fake.bodies_sent.append((self.box_name, mail.uid))
            if m.group(2) is not None:
                start = int(m.group(2))
                return _literal(f"BODY[{section}]<{start}>", data[start:start + int(m.group(3))])
            return _literal(f"BODY[{section}]", data)
        value = {"UID": mail.uid, "FLAGS": f"({mail.flags})", "RFC822.SIZE": len(mail.raw),
                 "INTERNALDATE": f'"{mail.internaldate}"', "X-GM-MSGID": mail.msgid, "X-GM-THRID": mail.thrid,
                 "X-GM-LABELS": f"({mail.labels})"}[name]
        return f"{name} {value}".encode()
