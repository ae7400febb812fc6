"""The verifying TLS client contexts of outgoing connections (SMTP, HTTP), one per CA file per
process."""

import os
import ssl
import threading

from outgoing.errors import TransportError

# Building a default context loads the system CA store (~30-60 ms): build one per CA file per
# process, not one per send. A configured SSLContext is safe to share between connections and threads.
_contexts: dict[tuple, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def tls_context(cafile: str | None = None) -> ssl.SSLContext:
    """The verifying client context for `cafile` (None: the system store), built once. A CA file
    is keyed by its modification time too, so a renewed file is picked up without a restart."""
    key: tuple = ("",)
    try:
        if cafile:
            key = (cafile, os.stat(cafile).st_mtime_ns)
        context = _contexts.get(key)
        if context is None:
            with _contexts_lock:
                context = _contexts.get(key)
                if context is None:
                    context = _contexts[key] = ssl.create_default_context(cafile=cafile or None)
    except (OSError, ssl.SSLError):
        # One text for a missing, unreadable or malformed file: the error must not tell a service
        # owner which paths exist on this server.
        raise TransportError("config.cafile: not a readable CA bundle (PEM)", permanent=True) from None
    return context
