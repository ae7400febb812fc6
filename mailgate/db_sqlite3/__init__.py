"""Django's SQLite backend with a write gate that lets the bulk lane yield (see base.py)."""
