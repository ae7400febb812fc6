"""Two-phase, incremental, UIDVALIDITY-safe batch sync of an account's folders.

Per folder, on one connection (EXAMINE: read-only, so nothing we do can set \\Seen):
  1. UIDVALIDITY check. A new value means every stored UID is meaningless: the folder is rescanned
     from UID 1 and messages are re-mapped by identity (imap/identity.py); old locations are
     retired (expunged_at) only after the rescan has stored every current one, and a message whose
     raw bytes are stored is never downloaded again.
  2. Flags and expunges of known UIDs: UID FETCH (FLAGS) (CHANGEDSINCE <modseq>) with CONDSTORE,
     otherwise the flags of the last MAILGATE_SYNC_FLAG_WINDOW UIDs. Expunges are looked for (UID
     SEARCH) only when the server's message count disagrees with ours.
  3. Phase 1, metadata of new UIDs in batches: UID, FLAGS, RFC822.SIZE, INTERNALDATE, BODY.PEEK[HEADER]
     (+ Gmail ids and labels). Each batch commits its Messages (status HEADERS, or TOO_LARGE),
     MessageLocations and the folder's highest_uid together, so a crash never leaves a gap and a
     rerun never duplicates. Identities retention purged (pipeline.PurgedIdentity) are skipped -
     no Message, no location - while highest_uid still moves past them: the message was relayed
     once and is gone from mailgate, so a rescan or a copy to another folder must not bring it back.
  4. Phase 2, bodies: BODY.PEEK[] of this folder's messages still in status HEADERS, in batches
     bounded by count and bytes, each batch handed to pipeline.ingest.attach_raw_batch (idempotent).
     A message expunged from every folder before its body came is marked GONE (final, purged by
     retention like any other); if it turns up in a folder again it goes back to HEADERS.
"""

from __future__ import annotations

import email.utils
import imaplib
import logging
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone as dt_timezone
from email.header import decode_header, make_header
from io import StringIO

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models.constants import OnConflict
from django.utils import timezone

from imap import account_state, errors, folders as folder_list, identity as identity_mod, slots, utf7, wire
from imap.connection import classify, open_mailbox
from imap.models import Account, Folder, MessageLocation
from mailgate import realtime
from pipeline import ingest
from pipeline.models import Message, PurgedIdentity, Thread

log = logging.getLogger(__name__)


class AccountBlocked(errors.ImapError):
    """We must not connect now: account disabled, stopped after auth failures, or backing off."""

    reason = "not connecting"
    retry = False


@dataclass
class Stats:
    folders: int = 0
    new: int = 0  # locations stored (messages new to this folder)
    updated: int = 0  # locations whose flags changed
    expunged: int = 0  # locations gone from the server
    skipped_large: int = 0  # TOO_LARGE: metadata only
    bodies: int = 0  # BODY[] downloaded
    bytes: int = 0  # bytes of BODY[] downloaded
    fetch_commands: int = 0  # UID FETCH commands sent (any kind)
    body_fetch_commands: int = 0  # UID FETCH commands asking for BODY.PEEK[]
    rescans: int = 0  # folders rescanned after a UIDVALIDITY change
    skipped_purged: int = 0  # UIDs whose message retention removed (PurgedIdentity): not stored again

    def add(self, other: "Stats") -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class Report:
    account: int
    stats: Stats = field(default_factory=Stats)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        s = self.stats
        return {"account": self.account, "folders": s.folders, "new": s.new, "updated": s.updated,
                "expunged": s.expunged, "skipped_large": s.skipped_large, "bytes": s.bytes,
                "seconds": round(self.seconds, 3), "bodies": s.bodies, "fetch_commands": s.fetch_commands,
                "errors": self.errors}


# --------------------------------------------------------------------------- connection


@dataclass
class Connection:
    account: Account
    client: imaplib.IMAP4
    capabilities: frozenset
    slot: slots.Slot

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.capabilities or "QRESYNC" in self.capabilities

    @property
    def gmail(self) -> bool:
        return "X-GM-EXT-1" in self.capabilities


def _capabilities(client) -> frozenset:
    # The pre-login greeting often lists fewer capabilities (Dovecot adds CONDSTORE after login).
    typ, data = client.capability()
    caps = set()
    for line in data or ():
        if isinstance(line, bytes):
            caps.update(line.decode("ascii", "replace").upper().split())
    client.capabilities = tuple(sorted(caps))
    return frozenset(caps)


@contextmanager
def connect(account: Account, purpose: str = "sync", *, ignore_backoff: bool = False):
    """A logged-in Connection holding one of the account's connection slots.

    Failures are classified (imap/errors.py), recorded on the account (backoff, AUTH_FAILED...)
    and re-raised; a session that ends normally records success.
    """
    reason = account_state.blocked_reason(account)
    if reason and not (ignore_backoff and account.enabled and account.state not in account_state.STOPPED_STATES):
        raise AccountBlocked(f"account {account.pk}: {reason}")
    with slots.connection_slot(account, purpose) as slot:
        try:
            with open_mailbox(account, timeout=settings.MAILGATE_IMAP_TIMEOUT) as mailbox:
                client = mailbox.client
                conn = Connection(account, client, _capabilities(client), slot)
                if conn.condstore and "ENABLE" in conn.capabilities:
                    client._simple_command("ENABLE", "CONDSTORE")
                yield conn
        except errors.TooManyConnections:
            raise
        except AccountBlocked:
            raise
        except Exception as exc:
            if isinstance(exc, (errors.ImapError, imaplib.IMAP4.error, OSError, EOFError)):
                classified = classify(exc, account)
                account_state.record_failure(account, classified)
                if classified is exc:
                    raise
                raise classified from exc
            raise
    account_state.record_success(account)


def _check(typ, data, what: str):
    if typ != "OK":
        text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace") if data else ""
        from imap.connection import throttle_from_text

        raise throttle_from_text(text) or errors.ProtocolError(f"{what} failed: {text[:200]}")
    return data


def uid_set(uids) -> str:
    """Compact IMAP sequence set: [1,2,3,7,9,10] -> "1:3,7,9:10"."""
    uids = sorted(set(uids))
    parts, start, prev = [], None, None
    for uid in uids:
        if start is None:
            start = prev = uid
        elif uid == prev + 1:
            prev = uid
        else:
            parts.append(f"{start}:{prev}" if start != prev else str(start))
            start = prev = uid
    if start is not None:
        parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


# --------------------------------------------------------------------------- header fields

# The header lines of a block, split and unfolded exactly as the stdlib parser (email.parser.
# HeaderParser, compat32 policy) does it - the same regex for "still a header line", the same
# universal line ends - but without building a Message of every field: phase 1 needs eight of them
# (bench/sync.py: the stdlib parse was ~10 % of a sync). tests/test_sync.py compares the two.
_HEADER_LINE = re.compile(r"^(From |[\041-\071\073-\176]*:|[\t ])")
_WANTED = frozenset({"subject", "from", "to", "cc", "date", "message-id", "in-reply-to", "references"})


def _raw_headers(text: str) -> dict[str, list[str]]:
    """{lower-cased name: [value, ...]} for the fields phase 1 reads, each value as
    HeaderParser().parsestr(text).get_all(name) returns it."""
    lines = []
    for line in StringIO(text, newline="").readlines():
        if not _HEADER_LINE.match(line):
            break
        lines.append(line)
    fields: dict[str, list[str]] = {}
    name, value = "", []
    last = len(lines) - 1

    def keep():
        key = name.lower()
        if key in _WANTED:
            first = value[0].split(":", 1)[1].lstrip(" \t")
            fields.setdefault(key, []).append((first + "".join(value[1:])).rstrip("\r\n"))

    for lineno, line in enumerate(lines):
        if line[0] in " \t":
            if name:
                value.append(line)
            continue  # a continuation before any header is ignored, as by the stdlib
        if name:
            keep()
            name, value = "", []
        if line.startswith("From "):
            if lineno == last and lineno:
                break  # the stdlib treats it as the first body line
            continue  # unix "From " envelope line (or a misplaced one): not a field
        colon = line.find(":")
        if colon == 0:
            continue  # no field name
        name, value = line[:colon], [line]
    if name:
        keep()
    return fields


def _clean(text: str, limit: int | None = None) -> str:
    text = text.replace("\x00", "")  # PostgreSQL text cannot hold NUL
    return text[:limit] if limit else text


def _decode(value) -> str:
    if value is None:
        return ""
    value = str(value)
    if "=?" not in value:
        return value  # no encoded-word: decode_header would hand it back unchanged, only slower
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # noqa: BLE001 - malformed encoded-words: keep the raw text
        return value


# Plain mailboxes - "Name Words <local@domain>" or "local@domain", dot-atoms only, no quotes,
# comments, groups or routes - are split here the way email.utils.getaddresses splits them (phrase
# words joined by one space); anything else goes to the stdlib. tests/test_sync.py compares the two.
# Possessive quantifiers: no backtracking, linear time on hostile input.
_FWS = r"[ \t\r\n]*+"
_ATEXT = r'[^\s\x00-\x1f\x7f()<>@,:;".\[\]\\]'  # no Unicode space either: the stdlib strip()s those
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_PHRASE_WORD = rf"(?:{_ATEXT}|\.)++"
_PLAIN_MAILBOX = re.compile(rf"{_FWS}(?:((?:{_PHRASE_WORD}{_FWS})*+)<({_DOT_ATOM}@{_DOT_ATOM})>"
                            rf"|({_DOT_ATOM}@{_DOT_ATOM})){_FWS}")
_WORD = re.compile(_PHRASE_WORD)


def _plain_addresses(field: str) -> list[tuple[str, str]] | None:
    pairs = []
    for part in field.split(","):
        m = _PLAIN_MAILBOX.fullmatch(part)
        if m is None:
            return None
        if m[3] is not None:
            pairs.append(("", m[3]))
        else:
            pairs.append((" ".join(_WORD.findall(m[1])), m[2]))
    return pairs


def _addresses(values) -> list[dict]:
    out = []
    try:
        pairs = _plain_addresses(", ".join(str(v) for v in values)) if values else []
        if pairs is None:
            pairs = email.utils.getaddresses([str(v) for v in values])
    except (RecursionError, ValueError, TypeError, IndexError):
        return []  # hostile address lists (deep nesting) - standardize reports them properly
    for name, address in pairs:
        if name or address:
            out.append({"name": _clean(_decode(name), 500), "address": _clean(address, 500)})
    return out


def header_fields(header: bytes) -> dict:
    """Cheap Message fields from the header block; the standardize stage rewrites them later from
    the full message, so this only has to be good enough to show a list entry at once. Never
    raises: a header that defeats the stdlib parser yields empty fields, not a stuck sync."""
    try:
        return _header_fields(header)
    except Exception:  # noqa: BLE001 - RecursionError and friends on hostile headers
        log.info("unparseable header block kept for standardize", exc_info=True)
        return {}


def _header_fields(header: bytes) -> dict:
    fields = _raw_headers(header.decode("utf-8", "replace"))

    def first(name: str) -> str:
        values = fields.get(name)
        return values[0] if values else ""

    senders = _addresses(fields.get("from", []))
    date = None
    if first("date"):
        try:
            date = email.utils.parsedate_to_datetime(first("date"))
            if date.tzinfo is None:
                date = date.replace(tzinfo=dt_timezone.utc)
        except (TypeError, ValueError, IndexError, OverflowError):
            date = None
    return {
        "subject": _clean(" ".join(_decode(first("subject")).split())),
        "sender_name": senders[0]["name"] if senders else "",
        "sender_address": senders[0]["address"] if senders else "",
        "to": _addresses(fields.get("to", [])),
        "cc": _addresses(fields.get("cc", [])),
        "date": date,
        "message_id": _clean(" ".join(first("message-id").split()), 998),
        "in_reply_to": _clean(" ".join(first("in-reply-to").split()), 998),
        "references": first("references").split()[:100],
    }


def _internaldate(value) -> datetime | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        try:
            return datetime.strptime(value, "%d-%b-%Y %H:%M:%S %z")
        except ValueError:
            return None


def _labels(value) -> list[str]:
    out = []
    for label in value or []:
        if isinstance(label, bytes):
            label = bytes(label).decode("utf-8", "replace")
        if not isinstance(label, str):
            continue
        try:
            out.append(utf7.decode(label))
        except utf7.Utf7Error:
            out.append(label)
    return out


def _flags(value) -> list[str]:
    # \Recent is per-session noise: it would make every sync look like a flag change.
    return sorted({f for f in (value or []) if isinstance(f, str) and f.lower() != "\\recent"})


# --------------------------------------------------------------------------- phase-1 inserts

# Defaults that are the same value every time they are called: computed once per batch. Any other
# callable default (uuid4, now) is called per row, as Model.__init__ would.
_CONSTANT_FACTORIES = (list, dict, tuple, set, frozenset, str, int, float, bool)


_MESSAGE_VARYING = ["id", "identity", "gm_msgid", "size", "flags", "labels", "thread", "status",
                    "subject", "sender_name", "sender_address", "to", "cc", "date", "message_id",
                    "in_reply_to", "references"]
# header_fields() keys in _MESSAGE_VARYING order, with the value used when the header block could
# not be parsed (header_fields returned {}): the model field's default.
_HEADER_DEFAULTS = [(name, Message._meta.get_field(name).get_default()) for name in _MESSAGE_VARYING[8:]]
_LOCATION_VARYING = ["message", "uid", "flags", "modseq", "internaldate", "size", "gm_labels"]


class _InsertIgnoringConflicts:
    """INSERT OR IGNORE / INSERT ... ON CONFLICT DO NOTHING of many rows of `model` as ONE
    executemany of a prepared statement - what bulk_create(ignore_conflicts=True) does, minus
    its cost (bench/sync.py: building model instances, preparing ~36 values per row in the compiler,
    and on SQLite 27-row statements at the 999-parameter limit made phase 1's two bulk_creates
    ~40 % of a sync).

    The column list follows the model: `varying` fields get a value per row, `constant` ones (by
    attname) one value for all rows, every other concrete field its default as the ORM computes
    it (pre_save: auto_now/auto_now_add; non-constant callable defaults per row); auto-increment
    keys, generated columns and db_default fields are left to the database. Every value goes
    through the field's get_db_prep_save, so UUIDs, JSON and datetimes are encoded for each backend
    exactly as bulk_create encodes them. Conflicts with a unique constraint drop the row, which is
    how concurrent syncs of the same message meet (the caller re-reads what won)."""

    def __init__(self, model, varying: list[str], constant: dict):
        self.connection = connection = connections[router.db_for_write(model)]
        meta = model._meta
        template = model(**constant)
        fields, base, self.varying, self.per_row = [], [], [], []
        varying_fields = {name: meta.get_field(name) for name in varying}
        slot_of = {}
        for f in meta.concrete_fields:
            if f.generated or (f.primary_key and f.db_returning):
                continue  # the database assigns it
            slot = len(fields)
            if f.name in varying_fields:
                slot_of[f.name] = slot
                base.append(None)
            elif f.attname in constant:
                base.append(f.get_db_prep_save(f.pre_save(template, True), connection))
            elif f.has_db_default():
                continue
            elif f.has_default() and callable(f.default) and f.default not in _CONSTANT_FACTORIES:
                self.per_row.append((slot, f))
                base.append(None)
            else:
                base.append(f.get_db_prep_save(f.pre_save(template, True), connection))
            fields.append(f)
        self.varying = [(slot_of[name], varying_fields[name].get_db_prep_save) for name in varying]
        self.base = base
        ops, qn = connection.ops, connection.ops.quote_name
        self.sql = (f"{ops.insert_statement(on_conflict=OnConflict.IGNORE)} {qn(meta.db_table)} "
                    f"({', '.join(qn(f.column) for f in fields)}) VALUES ({', '.join(['%s'] * len(fields))}) "
                    f"{ops.on_conflict_suffix_sql(fields, OnConflict.IGNORE, None, None)}").rstrip()

    def insert(self, rows) -> None:
        """rows: one sequence of python values per row, in the order of `varying`."""
        connection, varying, per_row, base = self.connection, self.varying, self.per_row, self.base
        params = []
        for row in rows:
            values = base.copy()
            for (slot, prep), value in zip(varying, row):
                values[slot] = prep(value, connection)
            for slot, f in per_row:
                values[slot] = f.get_db_prep_save(f.get_default(), connection)
            params.append(values)
        if params:
            with connection.cursor() as cursor:
                cursor.executemany(self.sql, params)


# --------------------------------------------------------------------------- folder sync


class FolderSync:
    def __init__(self, conn: Connection, folder: Folder, stats: Stats, progress=None):
        self.conn = conn
        self.client = conn.client
        self.account = conn.account
        self.folder = folder
        self.stats = stats
        self.progress = progress or (lambda n: None)

    # -- wire
    def _uid(self, command: str, *args):
        if command == "FETCH":
            self.stats.fetch_commands += 1
        typ, data = self.client.uid(command, *args)
        return _check(typ, data, f"UID {command} in {self.folder.name!r}")

    def _examine(self) -> dict:
        typ, data = self.client.select(utf7.quote(self.folder.name), readonly=True)
        _check(typ, data, f"EXAMINE {self.folder.name!r}")
        untagged = self.client.untagged_responses

        def last_int(key):
            values = untagged.get(key) or []
            return wire.as_int(values[-1]) if values else None

        return {"exists": wire.as_int(data[0]) or 0, "uidvalidity": last_int("UIDVALIDITY"),
                "uidnext": last_int("UIDNEXT"), "highestmodseq": last_int("HIGHESTMODSEQ")}

    def _search_uids(self, criteria: str) -> list[int]:
        data = self._uid("SEARCH", "UID", criteria)
        uids = []
        for line in data:
            if isinstance(line, bytes):
                uids.extend(int(t) for t in line.split() if t.isdigit())
        return uids

    # -- the steps
    def run(self, flags_only: bool = False) -> None:
        state = self._examine()
        folder = self.folder
        if state["uidvalidity"] is None:
            raise errors.ProtocolError(f"{folder.name!r}: server sent no UIDVALIDITY")
        rescan = folder.uidvalidity is not None and folder.uidvalidity != state["uidvalidity"]
        if rescan:
            log.warning("account %s folder %r: UIDVALIDITY %s -> %s, rescanning", self.account.pk,
                        folder.name, folder.uidvalidity, state["uidvalidity"])
            self.stats.rescans += 1
        if folder.uidvalidity != state["uidvalidity"]:
            folder.uidvalidity = state["uidvalidity"]
            folder.highest_uid = 0
            folder.highestmodseq = None
            Folder.objects.filter(pk=folder.pk).update(uidvalidity=folder.uidvalidity, highest_uid=0,
                                                       highestmodseq=None)
        known_up_to = folder.highest_uid
        new_uids = []
        if state["exists"]:
            # "n:*" always matches the last message even when its UID is below n.
            new_uids = [u for u in self._search_uids(f"{known_up_to + 1}:*") if u > known_up_to]
        if known_up_to:
            self._sync_flags(state, known_up_to)
            self._find_expunged(state, known_up_to, len(new_uids))
        if flags_only and not rescan:
            new_uids = []
        if new_uids:
            self._fetch_metadata(new_uids)
        if not flags_only or rescan:
            self._retire_old_uidvalidity()
            self._fetch_bodies()
        values = {"uidnext": state["uidnext"], "last_synced_at": timezone.now()}
        if self.conn.condstore and state["highestmodseq"] and (not flags_only or not new_uids):
            values["highestmodseq"] = state["highestmodseq"]
        Folder.objects.filter(pk=folder.pk).update(**values)
        for k, v in values.items():
            setattr(folder, k, v)

    def _live(self):
        return MessageLocation.objects.filter(folder=self.folder, uidvalidity=self.folder.uidvalidity,
                                              expunged_at__isnull=True)

    def _sync_flags(self, state, known_up_to: int) -> None:
        folder = self.folder
        # Gmail labels change like flags (and move MODSEQ): without asking for them here a label
        # added or removed after the first sync never reached the message.
        gmail = self.conn.gmail
        items = "(UID FLAGS X-GM-LABELS)" if gmail else "(UID FLAGS)"
        if self.conn.condstore and folder.highestmodseq and state["highestmodseq"]:
            if state["highestmodseq"] == folder.highestmodseq:
                return  # nothing changed since the last sync
            data = self._uid("FETCH", f"1:{known_up_to}", items, f"(CHANGEDSINCE {folder.highestmodseq})")
        else:
            window = list(self._live().order_by("-uid").values_list("uid", flat=True)
                          [:settings.MAILGATE_SYNC_FLAG_WINDOW])
            if not window:
                return
            data = self._uid("FETCH", f"{min(window)}:{known_up_to}", items)
        server = {}
        for item in wire.fetch_items(data):
            uid = wire.as_int(item.get("UID"))
            if uid is not None and uid <= known_up_to and "FLAGS" in item:
                labels = _labels(item["X-GM-LABELS"]) if gmail and "X-GM-LABELS" in item else None
                server[uid] = (_flags(item["FLAGS"]), wire.as_int(item.get("MODSEQ")), labels)
        if not server:
            return
        changed = []
        for loc in self._live().filter(uid__in=list(server)).only("id", "uid", "flags", "modseq", "gm_labels",
                                                                  "message_id"):
            flags, modseq, labels = server[loc.uid]
            relabelled = labels is not None and sorted(loc.gm_labels or []) != sorted(labels)
            if sorted(loc.flags) != flags or relabelled:
                loc.flags = flags
                loc.modseq = modseq
                if labels is not None:
                    loc.gm_labels = labels
                changed.append(loc)
        if changed:
            with transaction.atomic():
                MessageLocation.objects.bulk_update(changed, ["flags", "modseq", "gm_labels"], batch_size=500)
                self.stats.updated += len(changed)
                _refresh_message_flags(self.account, {loc.message_id for loc in changed}, gmail=gmail)

    def _find_expunged(self, state, known_up_to: int, new_count: int) -> None:
        live = self._live()
        if live.count() + new_count == state["exists"]:
            return  # every message we know is still there (counts match, see docs/sync.md)
        present = set(self._search_uids(f"1:{known_up_to}")) if state["exists"] else set()
        gone = [(pk, mid) for pk, uid, mid in live.values_list("pk", "uid", "message_id") if uid not in present]
        if not gone:
            return
        with transaction.atomic():
            MessageLocation.objects.filter(pk__in=[pk for pk, _ in gone]).update(expunged_at=timezone.now())
            self.stats.expunged += len(gone)
            _refresh_message_flags(self.account, {mid for _, mid in gone}, gmail=self.conn.gmail)
            _mark_gone({mid for _, mid in gone})

    def _retire_old_uidvalidity(self) -> None:
        """After a complete rescan under a new UIDVALIDITY, old-UID locations point nowhere."""
        old = MessageLocation.objects.filter(folder=self.folder, expunged_at__isnull=True).exclude(
            uidvalidity=self.folder.uidvalidity)
        rows = list(old.values_list("pk", "message_id"))
        if not rows:
            return
        still_here = set(self._live().filter(message_id__in={m for _, m in rows}).values_list("message_id", flat=True))
        with transaction.atomic():
            MessageLocation.objects.filter(pk__in=[pk for pk, _ in rows]).update(expunged_at=timezone.now())
            self.stats.expunged += sum(1 for _, m in rows if m not in still_here)
            _refresh_message_flags(self.account, {m for _, m in rows}, gmail=self.conn.gmail)
            _mark_gone({m for _, m in rows})

    # -- phase 1
    def _fetch_metadata(self, uids: list[int]) -> None:
        # The body prefix feeds the identity (see imap/identity.py), it is not stored.
        items = f"UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER] BODY.PEEK[TEXT]<0.{identity_mod.BODY_PREFIX}>"
        if self.conn.condstore:
            items += " MODSEQ"
        if self.conn.gmail:
            items += " X-GM-MSGID X-GM-THRID X-GM-LABELS"
        # Headers are small: metadata batches can be larger than body batches.
        size = max(1, settings.MAILGATE_SYNC_BATCH_SIZE) * 2
        for start in range(0, len(uids), size):
            chunk = uids[start:start + size]
            data = self._uid("FETCH", uid_set(chunk), f"({items})")
            self._store_metadata(wire.fetch_items(data), max(chunk))
            self.conn.slot.renew()

    def _store_metadata(self, items: list[dict], batch_max_uid: int) -> None:
        account, folder = self.account, self.folder
        limit = settings.MAILGATE_MAX_MESSAGE_BYTES
        parsed = []
        for item in items:
            uid = wire.as_int(item.get("UID"))
            header = item.get("BODY[HEADER]")
            if uid is None or uid <= folder.highest_uid or header is None:
                continue  # unsolicited FETCH (a flag change) or already stored
            header = bytes(header) if not isinstance(header, str) else header.encode()
            prefix = item.get("BODY[TEXT]<0>") or b""
            prefix = bytes(prefix) if not isinstance(prefix, str) else prefix.encode()
            size = wire.as_int(item.get("RFC822.SIZE")) or 0
            gm_msgid = wire.as_int(item.get("X-GM-MSGID"))
            parsed.append({
                "uid": uid, "header": header, "flags": _flags(item.get("FLAGS")),
                "size": size,
                "internaldate": _internaldate(item.get("INTERNALDATE")),
                "modseq": wire.as_int(item.get("MODSEQ")), "gm_msgid": gm_msgid,
                "gm_thrid": wire.as_int(item.get("X-GM-THRID")), "labels": _labels(item.get("X-GM-LABELS")),
                "identity": identity_mod.identity(header, size=size, body_prefix=prefix, gm_msgid=gm_msgid),
            })
        with transaction.atomic():
            if parsed:
                # One query per batch. Retention writes the tombstone in the transaction that
                # deletes the message, so an identity is either still a Message or tombstoned here.
                purged = set(PurgedIdentity.objects.filter(
                    account=account, identity__in={p["identity"] for p in parsed}).values_list("identity", flat=True))
                if purged:
                    self.stats.skipped_purged += sum(1 for p in parsed if p["identity"] in purged)
                    parsed = [p for p in parsed if p["identity"] not in purged]
            if parsed:
                identities = {p["identity"] for p in parsed}
                known = set(Message.objects.filter(account=account, identity__in=identities)
                            .values_list("identity", flat=True))
                fresh = {}  # identity -> (new pk, too large)
                rows = []
                new_pk = Message._meta.pk.get_default
                for p in parsed:
                    if p["identity"] in known or p["identity"] in fresh:
                        continue
                    pk, too_large = new_pk(), p["size"] > limit
                    fresh[p["identity"]] = (pk, too_large)
                    fields = header_fields(p["header"])
                    rows.append([pk, p["identity"], p["gm_msgid"], p["size"], p["flags"], p["labels"],
                                 self._gm_thread(p),
                                 str(Message.Status.TOO_LARGE if too_large else Message.Status.HEADERS),
                                 *[fields.get(name, default) for name, default in _HEADER_DEFAULTS]])
                # Conflicts are ignored: a concurrent sync of another folder may store the same
                # message first; the re-read below maps every identity to whichever row won.
                # Rows go in identity order: on PostgreSQL an insert that meets another
                # transaction's uncommitted row waits for it, so two syncs inserting the same
                # messages in different (UID) orders could deadlock; one order cannot.
                rows.sort(key=lambda row: row[1])
                _InsertIgnoringConflicts(Message, _MESSAGE_VARYING, {
                    "owner_id": account.owner_id, "source": Message.Source.IMAP, "account_id": account.pk,
                    "folder_id": folder.pk,
                }).insert(rows)
                by_identity = dict(Message.objects.filter(account=account, identity__in=identities)
                                   .values_list("identity", "pk"))
                if len(by_identity) < len(identities):
                    # Known a moment ago, purged since by a retention run that committed between
                    # our reads (PostgreSQL's READ COMMITTED): it is gone and tombstoned, skip it.
                    self.stats.skipped_purged += sum(1 for p in parsed if p["identity"] not in by_identity)
                    parsed = [p for p in parsed if p["identity"] in by_identity]
                    identities = set(by_identity)
                created = {pk for pk, _ in fresh.values()} & set(by_identity.values())
                self.stats.skipped_large += sum(1 for pk, too_large in fresh.values() if too_large and pk in created)
                before = self._live().filter(uid__in=[p["uid"] for p in parsed]).count()
                _InsertIgnoringConflicts(MessageLocation, _LOCATION_VARYING, {
                    "account_id": account.pk, "folder_id": folder.pk, "uidvalidity": folder.uidvalidity,
                }).insert([by_identity[p["identity"]], p["uid"], p["flags"], p["modseq"], p["internaldate"],
                           p["size"], p["labels"]] for p in parsed)
                self.stats.new += len(parsed) - before
                merged = {by_identity[i] for i in identities} - created
                if merged:  # known message seen in one more place: its flags are a union
                    _refresh_message_flags(account, merged, publish=False, gmail=self.conn.gmail)
                    # Back from the dead (moved or copied back before we had its body): phase 2
                    # of this sync downloads it.
                    Message.objects.filter(pk__in=merged, status=Message.Status.GONE).update(
                        status=Message.Status.HEADERS)
            Folder.objects.filter(pk=folder.pk, highest_uid__lt=batch_max_uid).update(highest_uid=batch_max_uid)
            folder.highest_uid = max(folder.highest_uid, batch_max_uid)
            if parsed:
                realtime.publish(account.owner_id, "sync.progress",
                               {"account_id": account.pk, "folder": folder.name, "new": len(parsed)})
        self.progress(len(parsed))

    def _gm_thread(self, p):
        if not p["gm_thrid"]:
            return None
        thread, _ = Thread.objects.get_or_create(owner_id=self.account.owner_id, gm_thrid=p["gm_thrid"])
        return thread.pk

    # -- phase 2
    def _fetch_bodies(self) -> None:
        pending = list(self._live().filter(message__status=Message.Status.HEADERS)
                       .order_by("uid").values_list("uid", "message_id", "size"))
        count_limit = max(1, settings.MAILGATE_SYNC_BATCH_SIZE)
        byte_limit = settings.MAILGATE_SYNC_BATCH_BYTES
        batch, batch_bytes = [], 0
        for row in pending:
            if batch and (len(batch) >= count_limit or batch_bytes + row[2] > byte_limit):
                self._fetch_body_batch(batch)
                batch, batch_bytes = [], 0
            batch.append(row)
            batch_bytes += row[2]
        if batch:
            self._fetch_body_batch(batch)

    def _fetch_body_batch(self, batch) -> None:
        by_uid = {uid: message_id for uid, message_id, _ in batch}
        self.stats.body_fetch_commands += 1
        data = self._uid("FETCH", uid_set(by_uid), "(UID BODY.PEEK[])")
        # Only the id is needed: attach_raw_batch updates by primary key and status.
        messages = Message.objects.only("id").in_bulk(list(by_uid.values()))
        pairs = []
        for item in wire.fetch_items(data):
            uid = wire.as_int(item.get("UID"))
            raw = item.get("BODY[]")
            if uid not in by_uid or raw is None:
                continue
            raw = bytes(raw)
            self.stats.bodies += 1
            self.stats.bytes += len(raw)
            message = messages.get(by_uid[uid])
            if message is None:
                continue  # deleted meanwhile (retention, admin)
            pairs.append((message, raw))
        # One transaction per batch: files first, then one conditional UPDATE of the messages still
        # in HEADERS and one insert of their standardize tasks after the commit. A crash rolls the
        # batch back to HEADERS; the raw files already written are content-addressed and reused.
        ingest.attach_raw_batch(pairs)
        self.conn.slot.renew()
        self.progress(len(pairs))


def _mark_gone(message_ids) -> None:
    """Messages still waiting for their body (HEADERS) whose last live location was just expunged
    can never be downloaded: mark them GONE, a final state retention may purge, instead of leaving
    them pending for ever."""
    live = MessageLocation.objects.filter(message_id__in=message_ids, expunged_at__isnull=True).values("message_id")
    Message.objects.filter(pk__in=message_ids, status=Message.Status.HEADERS).exclude(pk__in=live).update(
        status=Message.Status.GONE)


def _refresh_message_flags(account: Account, message_ids, *, publish: bool = True, gmail: bool = False) -> None:
    """Message.flags = union of the flags of its live locations (and Gmail labels likewise);
    publish "message.updated" for each message whose flags changed.

    `gmail`: the locations' labels are Gmail's own (X-GM-LABELS), so an empty union means the last
    label was removed and Message.labels is cleared; elsewhere no location has labels and
    Message.labels is left alone."""
    message_ids = list(message_ids)
    if not message_ids:
        return
    union: dict = {mid: set() for mid in message_ids}
    labels: dict = {mid: set() for mid in message_ids}
    live = MessageLocation.objects.filter(message_id__in=message_ids, expunged_at__isnull=True)
    has_live = set()
    for mid, flags, gm_labels, folder_name in live.values_list("message_id", "flags", "gm_labels", "folder__name"):
        has_live.add(mid)
        union[mid].update(flags or [])
        labels[mid].update(gm_labels or [])
    changed = []
    for message in Message.objects.filter(pk__in=message_ids).only("id", "flags", "labels", "owner_id"):
        if message.pk not in has_live:
            continue  # gone from every folder: keep the last known flags
        flags, new_labels = sorted(union[message.pk]), sorted(labels[message.pk])
        set_labels = bool(new_labels) or gmail
        if sorted(message.flags or []) != flags or (set_labels and sorted(message.labels or []) != new_labels):
            message.flags = flags
            if set_labels:
                message.labels = new_labels
            changed.append(message)
    if changed:
        Message.objects.bulk_update(changed, ["flags", "labels"], batch_size=500)
        if publish:
            folders_of: dict = {}
            for mid, name in live.filter(message_id__in=[m.pk for m in changed]).values_list("message_id",
                                                                                         "folder__name"):
                folders_of.setdefault(mid, []).append(name)
            for message in changed:
                realtime.publish(message.owner_id, "message.updated", {
                    "id": str(message.pk), "account_id": account.pk, "flags": message.flags,
                    "labels": message.labels, "folders": sorted(folders_of.get(message.pk, [])),
                })


# --------------------------------------------------------------------------- entry points


def refresh_folder_list(account: Account, conn: Connection | None = None) -> list[Folder]:
    """LIST the account's folders, store them, return the ones to sync in sync order."""
    if conn is None:
        with connect(account, "sync: list folders") as conn:
            return refresh_folder_list(account, conn)
    infos = folder_list.list_folders(conn.client, conn.capabilities)
    rows = {f.name: f for f in folder_list.store(account, infos)}
    chosen = folder_list.choose(infos, account.folders_include or (), account.folders_exclude or ())
    return [rows[i.name] for i in chosen]


def sync_account_now(account: Account, *, folder_names=None, flags_only: bool = False, progress=None,
                     ignore_backoff: bool = False) -> Report:
    """Sync the account's folders (or just `folder_names`) in this process on one connection.

    IMAP failures are recorded on the account and reported in Report.errors (not raised); a
    folder that fails (e.g. deleted meanwhile) does not stop the others.
    """
    report = Report(account.pk)
    started = time.monotonic()
    try:
        with connect(account, "sync", ignore_backoff=ignore_backoff) as conn:
            folders = refresh_folder_list(account, conn)
            if folder_names is not None:
                wanted = set(folder_names)
                listed = {f.name for f in folders}
                folders = [f for f in folders if f.name in wanted]
                report.errors += [f"folder {n!r} is not a selectable, included folder" for n in wanted - listed]
            for folder in folders:
                try:
                    FolderSync(conn, folder, report.stats, progress).run(flags_only=flags_only)
                    report.stats.folders += 1
                except (imaplib.IMAP4.abort, OSError, EOFError, errors.Throttled, errors.Timeout):
                    raise  # the connection is unusable: fail the whole session
                except (imaplib.IMAP4.error, errors.ProtocolError) as exc:
                    report.errors.append(f"{folder.name}: {classify(exc, account)}")
                    log.warning("account %s folder %r: %s", account.pk, folder.name, exc)
        Account.objects.filter(pk=account.pk).update(last_sync_at=timezone.now())
    except errors.ImapError as exc:
        report.errors.append(str(exc))
    report.seconds = time.monotonic() - started
    return report
