"""The web UI keeps no tables of its own: live-event numbering lives in mailgate.models."""
