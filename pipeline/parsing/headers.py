"""Header fields: read once, decoded as well as real mail allows, None when absent.

policy.default's header registry decodes subject, addresses and date wherever it copes; where it
fails on real mail (RecursionError on nested comments, HeaderParseError, IndexError or
AttributeError from the registry, 8-bit bytes) the plainer decoders here take over and leave a
short warning. Also the raw per-part lookups (content type, disposition, charset) the MIME walk
needs, each with a fallback for a header the stdlib chokes on.
"""

import binascii
import logging
import re
from datetime import timezone
from email import policy as email_policy
from email import utils as email_utils

from .charsets import b64decode_loosely, decode_8bit, decode_bytes
from .result import HEADERS_OF_INTEREST
from .text import clean, lossy, size, unfold

logger = logging.getLogger(__name__)

# The header registry is quadratic in the number of encoded words (0.9 s for a 135 KB Subject)
# and in the tokens of one address (a 16 KB dot-atom "a.a.a...@b.c" takes 0.25 s, 60 KB 3 s);
# past these sizes the plainer decoders below are used instead. email.utils.getaddresses is
# about linear (0.15 s for 64 KB of "@") but not free, so past its own cap a regex scan takes
# the bare addresses. A legitimate 100-recipient To: is about 4 KB.
_MAX_REGISTRY_UNSTRUCTURED = 16 * 1024
_MAX_REGISTRY_ADDRESSES = 4 * 1024
_MAX_COMPAT32_ADDRESSES = 32 * 1024
_ADDRESS_LABELS = {"from": "From", "sender": "Sender", "to": "To", "cc": "Cc", "reply-to": "Reply-To"}


# --- Raw values off an email.message.Message ---------------------------------------------------------

def raw_headers(msg):
    """Lower-cased name -> list of raw (unparsed, surrogate-escaped) values, in message order."""
    values = {}
    try:
        for name, value in msg.raw_items():
            values.setdefault(str(name).strip().lower(), []).append(str(value))
    except Exception:
        logger.debug("raw_items failed", exc_info=True)
    return values


def raw_header(part, name):
    """The first raw value of header `name` in `part`, "" when absent."""
    return next(iter(raw_headers(part).get(name, [])), "")


_RAW_CONTENT_TYPE = re.compile(r"\s*([\w!#$&^.+-]+/[\w!#$&^.+-]+)")


def content_type(part):
    try:
        return part.get_content_type()
    except Exception:  # the header registry choked; read the raw value
        match = _RAW_CONTENT_TYPE.match(raw_header(part, "content-type"))
        return match.group(1).lower() if match else "application/octet-stream"


def disposition(part):
    try:
        return part.get_content_disposition()
    except Exception:
        value = raw_header(part, "content-disposition").split(";", 1)[0].strip().lower()
        return value or None


def charset(part):
    try:
        return part.get_content_charset()
    except Exception:
        match = re.search(r"""charset\s*=\s*["']?([^"';\s]+)""", raw_header(part, "content-type"), re.I)
        return match.group(1).lower() if match else None


# --- The message's own fields -------------------------------------------------------------------------

def read_headers(msg, result):
    """Fill `result`'s header fields (subject, addresses, date, ids, headers) from `msg`."""
    raw = raw_headers(msg)
    warn = result.warnings.append
    result.subject = _unstructured(raw, "subject", warn)
    senders = _addresses(raw, "from", warn)
    if "from" not in raw:
        senders = _addresses(raw, "sender", warn)
        warn("no From header; sender taken from Sender" if senders else "no From header; sender unknown")
    elif not senders:
        warn("From header has no address; sender unknown")
    if senders:
        result.sender_name = senders[0]["name"][:500]
        result.sender_address = senders[0]["address"][:500]
    result.to = _addresses(raw, "to", warn)
    result.cc = _addresses(raw, "cc", warn)
    result.reply_to = _addresses(raw, "reply-to", warn)
    result.date = _date(raw, warn)
    result.message_id = _first_id(raw.get("message-id"))
    result.in_reply_to = _first_id(raw.get("in-reply-to"))
    result.references = _id_list(raw.get("references"))
    for key, name in HEADERS_OF_INTEREST.items():
        if name not in raw:
            result.headers[key] = None
            continue
        values = [clean(decode_header_text(v)).strip()[:998] for v in raw[name]]
        result.headers[key] = ", ".join(values) if key == "x_mailgate_relay" else values[0]
    # With its parameters: report-type=delivery-status is what marks a bounce.
    params = clean(decode_8bit(unfold(next(iter(raw.get("content-type", [])), "")))[0]).partition(";")[2]
    params = params.strip().strip(";").strip()
    ctype = content_type(msg)
    result.headers["content_type"] = (f"{ctype}; {params}" if params else ctype)[:998]


def _header(name, value):
    """The policy.default header object for a raw value: exactly what msg[name] would give."""
    return email_policy.default.header_fetch_parse(name, value)


def _unstructured(raw, name, warn):
    if name not in raw:
        return None
    value = raw[name][0]
    if len(value) <= _MAX_REGISTRY_UNSTRUCTURED:
        try:
            decoded = str(_header(name, value))
            if not lossy(decoded):
                return clean(decoded)
        except Exception as exc:
            warn(f"{type(exc).__name__} from the standard parser on the {name.capitalize()} header; "
                 "decoded it directly")
    return clean(decode_header_text(value, warn, f"the {name.capitalize()} header"))


def _addresses(raw, name, warn):
    """[{"name", "address"}] from an address header, whatever state it is in."""
    values = raw.get(name)
    if not values:
        return []
    label = _ADDRESS_LABELS[name]
    pairs = None
    if len(values[0]) <= _MAX_REGISTRY_ADDRESSES:
        try:
            header = _header(name, values[0])
            candidate = [(a.display_name, a.addr_spec) for a in header.addresses]
            if not any(lossy(n) or lossy(a) for n, a in candidate):
                pairs = _names_from_comments(candidate, values[0], warn, label)
        except Exception as exc:  # RecursionError on nested comments, registry bugs on odd groups
            warn(f"{type(exc).__name__} from the standard parser on the {label} header; used a simple parser")
    elif len(values[0]) > _MAX_COMPAT32_ADDRESSES:
        warn(f"{label} header is {size(len(values[0]))}; addresses taken with a simple scan")
    if pairs is None:
        pairs = _fallback_addresses(values[0], len(values[0]) <= _MAX_COMPAT32_ADDRESSES)
        pairs = [(decode_header_text(n, warn, f"the {label} header").strip(), decode_8bit(a)[0].strip())
                 for n, a in pairs]
    return [{"name": clean(n)[:500], "address": clean(a).lower()[:500]} for n, a in pairs if a or n]


def _names_from_comments(pairs, value, warn, label):
    """Names written the RFC 822 way, as a comment after the address: `bbb@ddd.com (John X. Doe)`.
    The registry drops comments, so the sender had no name once parsed, though Dovecot's ENVELOPE
    (which names a row before its message is parsed) and mail clients show "John X. Doe". compat32's
    parser keeps the comment as the name; it is used only for addresses the registry left unnamed."""
    if "(" not in value or all(name for name, _ in pairs):
        return pairs
    # The simple parser's compat32 pass (its scan, where that fails, names no one).
    named = {address.lower(): name for name, address in _fallback_addresses(value, try_compat32=True) if name}
    return [(name or decode_header_text(named.get(address.lower(), ""), warn, f"the {label} header").strip(), address)
            for name, address in pairs]


# The lookbehind starts a match only where a word starts: without it, 64 KB with no "@" cost
# 11 s (each position scanned to the end of the run).
_ADDR_SPEC = re.compile(r"""(?<![^\s<>()\[\],;:"'@])[^\s<>()\[\],;:"'@]+@[^\s<>()\[\],;:"'@]+""")


def _fallback_addresses(value, try_compat32):
    value = unfold(value)
    if try_compat32:
        try:
            return [(n, a) for n, a in email_utils.getaddresses([value]) if a]
        except Exception:  # RecursionError on nested comments and routes, mostly
            logger.debug("getaddresses failed", exc_info=True)
    return [("", a) for a in _ADDR_SPEC.findall(value)]


def _date(raw, warn):
    values = raw.get("date")
    if not values:
        return None
    value = None
    try:
        value = _header("date", values[0]).datetime
    except Exception:
        logger.debug("stdlib failed on date", exc_info=True)
    text = clean(decode_header_text(values[0])).strip()
    if value is None:
        try:
            value = email_utils.parsedate_to_datetime(text)
        except Exception:
            value = None
    if value is None:
        warn(f"date header unparseable: {text[:80]!r}")
        return None
    # "-0000" means "zone unknown"; treating it as UTC is the closest honest reading.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


_MSG_ID = re.compile(r"<([^<>]+)>")


def _first_id(values):
    """The first Message-ID in a header: None when the header is absent, "" when it holds none."""
    if values is None:
        return None
    ids = _id_list(values, loose=True)
    return ids[0] if ids else ""


def _id_list(values, loose=False):
    if not values:
        return []
    text = clean(decode_8bit(unfold(" ".join(values)))[0])
    ids = [re.sub(r"\s+", "", i) for i in _MSG_ID.findall(text)]
    if not ids and loose:
        # Some systems write Message-ID without brackets; free text ("your message of ...") is no id.
        ids = [t for t in text.split() if "@" in t][:1]
    # The newest references matter for threading; a runaway header is cut from the front.
    return [i[:998] for i in ids if i][-100:]


# --- RFC 2047 and 8-bit header text --------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")


def decode_header_text(value, warn=None, where="a header"):
    """Decode RFC 2047 encoded words and raw 8-bit bytes in a raw header value.

    Adjacent encoded words in one charset are joined before decoding, as multi-byte characters
    are often split across them. `warn`, when given, receives a sentence per lossy decoding.
    """
    if not value:
        return ""
    value = unfold(str(value))
    tokens = []  # [text] or [charset, bytearray]
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos:match.start()]
        if between and not (between.isspace() and tokens and len(tokens[-1]) == 2):
            tokens.append([between])
        charset_label = match.group(1).split("*", 1)[0].lower()
        data = _decode_word(match.group(2).lower(), match.group(3))
        if tokens and len(tokens[-1]) == 2 and tokens[-1][0] == charset_label:
            tokens[-1][1] += data
        else:
            tokens.append([charset_label, bytearray(data)])
        pos = match.end()
    if pos < len(value):
        tokens.append([value[pos:]])
    out = []
    for token in tokens:
        if len(token) == 1:
            text, fallback = decode_8bit(token[0])
            problem = f"raw 8-bit bytes in {where} are not UTF-8; decoded as {fallback}" if fallback else None
        else:
            text, problem = decode_bytes(token[1], token[0], where)
        if problem and warn:
            warn(problem)
        out.append(text)
    return "".join(out)


def _decode_word(encoding, text):
    data = text.encode("utf-8", "surrogateescape")
    return binascii.a2b_qp(data, header=True) if encoding == "q" else b64decode_loosely(data)
