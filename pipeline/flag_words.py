"""IMAP flags as a mail client names them (RFC 3501 system flags and the common keywords), for
every page that shows a message's flags: the web UI (frontend/wording.py) and the admin."""

FLAG_WORDS = {"\\seen": "Read", "\\flagged": "Starred", "\\answered": "Replied", "\\draft": "Draft",
              "\\deleted": "Marked for deletion", "\\recent": "New", "$forwarded": "Forwarded",
              "$junk": "Junk", "$notjunk": "Not junk", "$important": "Important", "$phishing": "Phishing"}


def flag_words(values) -> list[str]:
    """e.g. ["\\Flagged", "\\Seen"] -> ["Starred", "Read"]; "Unread" first when \\Seen is missing
    (read is the normal state of mail). Custom keywords keep their own name."""
    lowered = {str(v).lower() for v in values}
    words = [FLAG_WORDS.get(str(v).lower(), str(v).lstrip("$")) for v in values]
    if "\\seen" not in lowered:
        words.insert(0, "Unread")
    return list(dict.fromkeys(words))
