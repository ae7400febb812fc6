"""Real-server test harness: private Dovecot, SMTP sink, Redis and HTTP sink.

Every server here binds to 127.0.0.1 on a free high port, keeps its state in a
fresh temp dir, and is stopped by PID (never by name) at the latest when the
test process exits.
"""
