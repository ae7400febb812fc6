"""Start the IDLE manager thread from AppConfig.ready, but only in the process meant to run it.

An operator who wants the manager inside the web server (one process fewer) sets MAILGATE_IDLE=1
for daphne; the Procfile sets nothing and runs it as its own `idle:` process (`manage.py idle`,
the same manager in the foreground). Management commands (migrate, test, shell, qcluster, ...)
never start the thread, whatever the environment says.
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
