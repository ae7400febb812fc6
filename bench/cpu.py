"""CPU seconds that processes spent between two moments, read from /proc (Linux only).

A bench on a 2-core machine is CPU-bound or waits: this says which, and who spent the CPU (the
workers, the database server, the bench's own sink). A process that started in the window counts
whole; one that ended in it is missed, so the sums are a floor.
"""

import os
from collections import Counter

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def snapshot() -> dict[int, tuple[float, str]]:
    """pid -> (user + system CPU seconds, command line) of every process now readable."""
    seen = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return seen
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        seen[pid] = ((int(fields[11]) + int(fields[12])) / TICKS, command)
    return seen


def spent(before: dict, after: dict, classify) -> Counter:
    """CPU seconds by the name `classify(pid, command)` gives (None: not counted)."""
    totals = Counter()
    for pid, (seconds, command) in after.items():
        name = classify(pid, command)
        if name is None:
            continue
        start = before.get(pid)
        totals[name] += seconds - (start[0] if start and start[1] == command else 0.0)
    return totals
