"""IMAP IDLE: push notifications for every enabled account, turned into queued folder syncs.

    manage.py idle                 # the Procfile's `idle:` process (foreground, SIGTERM to stop)
    start_manager_thread()         # inside a server process (imap/idle_autostart.py decides)

Layout: client.py (one aioimaplib connection), watcher.py (one account's connections, reconnects),
manager.py (leases, fair share, account changes, shutdown); leases live in imap/leases.py.
docs/idle.md has the design and the measured figures.
"""

from imap.idle.manager import Manager, run_foreground, start_manager_thread

__all__ = ["Manager", "run_foreground", "start_manager_thread"]
