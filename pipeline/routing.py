"""Which outgoing services a message goes to: every enabled Route of its owner that matches.

A route's empty criteria match everything; all given criteria must match (AND). Patterns are
regular expressions searched case-insensitively; the folder pattern is shell-style (fnmatch).
"""

import fnmatch
import re

from django.core.exceptions import ValidationError

PATTERN_FIELDS = ("from_pattern", "to_pattern", "subject_pattern")
MAX_PATTERN_LENGTH = 500


def compile_pattern(pattern: str) -> re.Pattern:
    """Compile a route pattern, or raise ValidationError saying what is wrong with it."""
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ValidationError(f"Not a valid regular expression: {exc.msg}{where}.") from None


def validate_route(route) -> None:
    """Route.clean(): reject invalid regular expressions with a message per field."""
    errors = {}
    for field in PATTERN_FIELDS:
        value = getattr(route, field) or ""
        if value:
            try:
                compile_pattern(value)
            except ValidationError as exc:
                errors[field] = exc.messages
    if route.account_id and route.channel_id:
        errors["channel"] = ["A route matches either an account or an inbound channel, not both."]
    if errors:
        raise ValidationError(errors)


def _search(pattern: str, values) -> bool:
    try:
        regex = compile_pattern(pattern)
    except ValidationError:
        return False  # saved without clean() (e.g. by a script): an invalid route matches nothing
    return any(regex.search(v) for v in values if v)


def _people(entries) -> list[str]:
    out = []
    for entry in entries or []:
        name, address = (entry.get("name") or "").strip(), (entry.get("address") or "").strip()
        out.append(f"{name} <{address}>" if name else address)
    return out


def folder_names(message) -> list[str]:
    names = [message.folder.name] if message.folder_id else []
    if message.account_id:
        names += [n for n in message.locations.values_list("folder__name", flat=True) if n not in names]
    return names


def route_matches(route, message, folders=None) -> bool:
    if not route.enabled or route.owner_id != message.owner_id:
        return False
    if route.account_id and route.account_id != message.account_id:
        return False
    if route.channel_id and route.channel_id != message.channel_id:
        return False
    if route.folder_pattern:
        folders = folder_names(message) if folders is None else folders
        if not any(fnmatch.fnmatchcase(f, route.folder_pattern) for f in folders):
            return False
    if route.from_pattern:
        sender = f"{message.sender_name} <{message.sender_address}>" if message.sender_name else message.sender_address
        if not _search(route.from_pattern, [sender]):
            return False
    if route.to_pattern and not _search(route.to_pattern, _people(message.to) + _people(message.cc)):
        return False
    if route.subject_pattern and not _search(route.subject_pattern, [message.subject]):
        return False
    if route.has_attachment is not None and route.has_attachment != message.has_attachments:
        return False
    return True


def route_links(owner_id) -> list:
    """Every (route, service) pair of the owner's enabled routes to enabled services, in one query
    (a route without services sends nowhere, so it need not be looked at)."""
    from pipeline.models import Route

    return list(Route.services.through.objects
                .filter(route__owner_id=owner_id, route__enabled=True, service__enabled=True)
                .select_related("route", "service"))


def matching_services(message, links=None) -> list:
    """Enabled services of every matching route, each once, in a stable order. `links`: the
    owner's route_links, when a batch read them once for all its messages."""
    if links is None:
        links = route_links(message.owner_id)
    folders = None
    matched: dict = {}
    services = {}
    for link in links:
        route = link.route
        if route.pk not in matched:
            if route.folder_pattern and folders is None:
                folders = folder_names(message)
            matched[route.pk] = route_matches(route, message, folders)
        if matched[route.pk]:
            services[link.service.pk] = link.service
    return [services[k] for k in sorted(services)]
