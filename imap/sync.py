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

The pieces around it: imap/connection.py (connect: slot, backoff, capabilities), imap/wire.py
(FETCH responses and their values, UID sets), imap/headers.py (phase 1's header fields),
mailgate/bulk_insert.py (phase 1's inserts), imap/locations.py (flag union and GONE).
"""

from __future__ import annotations

import imaplib
import logging
import time
from dataclasses import asdict, dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from imap import errors, folders as folder_list, identity as identity_mod, utf7, wire
from imap.connection import Connection, check, classify, connect
from imap.headers import header_fields
from imap.locations import mark_gone, refresh_message_flags
from imap.models import Account, Folder, MessageLocation
from mailgate import metrics, realtime
from mailgate.bulk_insert import InsertIgnoringConflicts
from pipeline import audit, events as pipeline_events, ingest
from pipeline.models import Event, Message, PurgedIdentity, Thread

log = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------- phase-1 rows


_MESSAGE_VARYING = ["id", "identity", "gm_msgid", "size", "flags", "labels", "thread", "status",
                    "arrival", "arrived_at", "subject", "sender_name", "sender_address", "to", "cc", "date", "message_id",
                    "in_reply_to", "references"]
# header_fields() keys in _MESSAGE_VARYING order, with the value used when the header block could
# not be parsed (header_fields returned {}): the model field's default.
_HEADER_DEFAULTS = [(name, Message._meta.get_field(name).get_default()) for name in _MESSAGE_VARYING[10:]]
_LOCATION_VARYING = ["message", "uid", "flags", "modseq", "internaldate", "size", "gm_labels"]


def arrival_time(internaldate, uid: int, now):
    """Message.arrived_at for a message first seen at `uid`: the server's INTERNALDATE (when it
    arrived there), never later than now (a server clock ahead of ours must not pin mail to the
    top). INTERNALDATE has whole seconds, so the UID goes in the microseconds: mail that arrived in
    the same second keeps the server's own order instead of a random one."""
    base = internaldate if internaldate is not None and internaldate <= now else now
    return base.replace(microsecond=uid % 1_000_000)


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
        return check(typ, data, f"UID {command} in {self.folder.name!r}")

    def _examine(self) -> dict:
        typ, data = self.client.select(utf7.quote(self.folder.name), readonly=True)
        check(typ, data, f"EXAMINE {self.folder.name!r}")
        untagged = self.client.untagged_responses

        def last_int(key):
            values = untagged.get(key) or []
            return wire.as_int(values[-1]) if values else None

        return {"exists": wire.as_int(data[0]) or 0, "uidvalidity": last_int("UIDVALIDITY"),
                "uidnext": last_int("UIDNEXT"), "highestmodseq": last_int("HIGHESTMODSEQ")}

    def _next_uid(self) -> int:
        """UIDNEXT for a server that did not say it on SELECT: one above the highest UID there."""
        return max(self._search_uids("1:*") or [0]) + 1

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
            # The folder's first sync: whatever it holds now is history (kept, never relayed);
            # only UIDs from UIDNEXT on arrived after, and mail that arrives while this sync runs
            # gets a UID at or above it, so it is new. A UIDVALIDITY reset of a folder that was
            # synced before is not new mail: messages re-found by identity keep what they were
            # (their rows are not touched) and only a message never seen here is new.
            first_sync = folder.last_synced_at is None
            folder.uidvalidity = state["uidvalidity"]
            folder.highest_uid = 0
            folder.highestmodseq = None
            folder.history_below_uid = (state["uidnext"] or self._next_uid()) if first_sync else 0
            Folder.objects.filter(pk=folder.pk).update(uidvalidity=folder.uidvalidity, highest_uid=0,
                                                       highestmodseq=None,
                                                       history_below_uid=folder.history_below_uid)
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
                labels = wire.labels(item["X-GM-LABELS"]) if gmail and "X-GM-LABELS" in item else None
                server[uid] = (wire.flags(item["FLAGS"]), wire.as_int(item.get("MODSEQ")), labels)
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
                refresh_message_flags(self.account, {loc.message_id for loc in changed}, gmail=gmail)

    def _find_expunged(self, state, known_up_to: int, new_count: int) -> None:
        # Only what this sync knew: a location above known_up_to was stored by a sync of the same
        # folder running beside this one (a push's task next to a scheduled or retried one), and
        # a search of 1:known_up_to cannot see it. Judged by that search, 50 messages of a first
        # sync interrupted by a PostgreSQL restart were marked deleted while still on the server.
        live = self._live().filter(uid__lte=known_up_to)
        if live.count() + new_count == state["exists"]:
            return  # every message we know is still there (counts match, see docs/sync.md)
        present = set(self._search_uids(f"1:{known_up_to}")) if state["exists"] else set()
        gone = [(pk, mid) for pk, uid, mid in live.values_list("pk", "uid", "message_id") if uid not in present]
        if not gone:
            return
        with transaction.atomic():
            MessageLocation.objects.filter(pk__in=[pk for pk, _ in gone]).update(expunged_at=timezone.now())
            self.stats.expunged += len(gone)
            refresh_message_flags(self.account, {mid for _, mid in gone}, gmail=self.conn.gmail)
            mark_gone({mid for _, mid in gone})

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
            refresh_message_flags(self.account, {m for _, m in rows}, gmail=self.conn.gmail)
            mark_gone({m for _, m in rows})

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
        viewers = self.account.viewer_ids()
        for start in range(0, len(uids), size):
            chunk = uids[start:start + size]
            data = self._uid("FETCH", wire.uid_set(chunk), f"({items})")
            created = self._store_metadata(wire.fetch_items(data), max(chunk))
            self.conn.slot.renew()
            # The inbox shows a message as soon as its headers are known, before its body comes.
            pipeline_events.messages_stored(viewers, "message.new", created, self.account.pk)
            realtime.publish(viewers, "sync.progress", {
                "account_id": self.account.pk, "folder": self.folder.name,
                "done": start + len(chunk), "total": len(uids), "new": len(created)})

    def _store_metadata(self, items: list[dict], batch_max_uid: int) -> list:
        """Phase 1 of one FETCH batch: the messages (HEADERS) and their locations; returns the
        ids of the messages this batch created (each with a FETCHED audit row)."""
        account, folder = self.account, self.folder
        created = []
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
                "uid": uid, "header": header, "flags": wire.flags(item.get("FLAGS")),
                "size": size,
                "internaldate": wire.internaldate(item.get("INTERNALDATE")),
                "modseq": wire.as_int(item.get("MODSEQ")), "gm_msgid": gm_msgid,
                "gm_thrid": wire.as_int(item.get("X-GM-THRID")), "labels": wire.labels(item.get("X-GM-LABELS")),
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
                history_below = folder.history_below_uid or 0
                summaries = {}  # new pk -> (sender, subject, uid) for its audit row
                rows = []
                new_pk = Message._meta.pk.get_default
                now = timezone.now()
                for p in parsed:
                    if p["identity"] in known or p["identity"] in fresh:
                        continue
                    pk, too_large = new_pk(), p["size"] > limit
                    fresh[p["identity"]] = (pk, too_large)
                    fields = header_fields(p["header"])
                    summaries[pk] = (fields.get("sender_address", ""), fields.get("subject", ""), p["uid"])
                    rows.append([pk, p["identity"], p["gm_msgid"], p["size"], p["flags"], p["labels"],
                                 self._gm_thread(p),
                                 str(Message.Status.TOO_LARGE if too_large else Message.Status.HEADERS),
                                 str(Message.Arrival.HISTORY if p["uid"] < history_below else Message.Arrival.NEW),
                                 arrival_time(p["internaldate"], p["uid"], now),
                                 *[fields.get(name, default) for name, default in _HEADER_DEFAULTS]])
                # Conflicts are ignored: a concurrent sync of another folder may store the same
                # message first; the re-read below maps every identity to whichever row won.
                # Rows go in identity order: on PostgreSQL an insert that meets another
                # transaction's uncommitted row waits for it, so two syncs inserting the same
                # messages in different (UID) orders could deadlock; one order cannot.
                rows.sort(key=lambda row: row[1])
                InsertIgnoringConflicts(Message, _MESSAGE_VARYING, {
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
                audit.record_all([audit.event_for(
                    Event.Kind.FETCHED, pk, account.owner_id, sender=summary[0], subject=summary[1],
                    detail=f"headers fetched from {folder.name}, UID {summary[2]}")
                    for pk, summary in sorted(summaries.items(), key=lambda item: item[1][2]) if pk in created])
                self.stats.skipped_large += sum(1 for pk, too_large in fresh.values() if too_large and pk in created)
                before = self._live().filter(uid__in=[p["uid"] for p in parsed]).count()
                InsertIgnoringConflicts(MessageLocation, _LOCATION_VARYING, {
                    "account_id": account.pk, "folder_id": folder.pk, "uidvalidity": folder.uidvalidity,
                }).insert([by_identity[p["identity"]], p["uid"], p["flags"], p["modseq"], p["internaldate"],
                           p["size"], p["labels"]] for p in parsed)
                self.stats.new += len(parsed) - before
                merged = {by_identity[i] for i in identities} - created
                if merged:  # known message seen in one more place: its flags are a union
                    refresh_message_flags(account, merged, publish=False, gmail=self.conn.gmail)
                    # Back from the dead (moved or copied back before we had its body): phase 2
                    # of this sync downloads it.
                    Message.objects.filter(pk__in=merged, status=Message.Status.GONE).update(
                        status=Message.Status.HEADERS)
            Folder.objects.filter(pk=folder.pk, highest_uid__lt=batch_max_uid).update(highest_uid=batch_max_uid)
            folder.highest_uid = max(folder.highest_uid, batch_max_uid)
        self.progress(len(parsed))
        return created

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
        data = self._uid("FETCH", wire.uid_set(by_uid), "(UID BODY.PEEK[])")
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
        try:
            ingest.attach_raw_batch(pairs)
        except OSError as exc:
            # The disk, not the connection: classify() would call any OSError a network error.
            raise errors.StorageFailed(f"cannot store mail in the files dir: {exc.strerror or exc}") from exc
        self.conn.slot.renew()
        self.progress(len(pairs))


# --------------------------------------------------------------------------- entry points


def refresh_folder_list(account: Account, conn: Connection | None = None) -> list[Folder]:
    """LIST the account's folders, store them, return the ones to sync in sync order."""
    if conn is None:
        with connect(account, "sync: list folders", wait=settings.MAILGATE_SLOT_WAIT) as conn:
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
        with connect(account, "sync", ignore_backoff=ignore_backoff,
                     wait=settings.MAILGATE_SLOT_WAIT) as conn:
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
    metrics.synced(report.stats.new, report.stats.bytes)
    return report
