"""Network facts every layer asks about: IMAP accounts, SMTP services and API URLs alike."""

import ipaddress

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine: the one place cleartext credentials may go."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def non_public_kind(address: str) -> str:
    """What kind of non-public address `address` (an IP literal) is - "loopback", "private",
    "link-local", "multicast", "unspecified", "reserved" - or "" for a public one.

    An IPv4 address written as IPv6 (::ffff:127.0.0.1) is judged as the IPv4 address it reaches.
    Anything Python does not call global (shared CGNAT space, documentation ranges) counts as
    reserved: a service has no business there either."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id names a link: link-local
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, test in (("loopback", ip.is_loopback), ("unspecified", ip.is_unspecified),
                       ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                       ("reserved", ip.is_reserved), ("private", ip.is_private), ("reserved", not ip.is_global)):
        if test:
            return kind
    return ""
