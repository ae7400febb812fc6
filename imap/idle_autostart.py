"""Start the IDLE manager thread from AppConfig.ready, but only in the process meant to run it.

MAILGATE_IDLE=1 is set by the Procfile's web process; management commands (migrate, test, shell,
qcluster, ...) never start it, whatever the environment says. `manage.py idle` runs the same
manager in the foreground instead.
"""

import os
import sys

from django.conf import settings

from imap.idle import start_manager_thread

# Servers that host the manager thread. Everything else invoked through manage.py is a command.
SERVER_PROGRAMS = {"daphne", "uvicorn", "gunicorn"}


def should_start(argv: list[str] | None = None) -> bool:
    if not settings.MAILGATE_IDLE:
        return False
    argv = argv if argv is not None else sys.argv
    program = os.path.basename(argv[0]) if argv else ""
    if program in SERVER_PROGRAMS:
        return True
    # `python -m daphne ...` shows up as .../daphne/__main__.py
    return program == "__main__.py" and any(part in SERVER_PROGRAMS for part in argv[0].split(os.sep))


def maybe_start() -> None:
    if should_start():
        start_manager_thread()
