"""The one backoff rule: exponential, capped, with "equal jitter".

Used for IMAP reconnects (IDLE), account errors (batch sync) and delivery retries. Half of each
delay is fixed and half random, so a fleet that failed together (a provider outage, a server
restart that dropped a thousand connections) does not come back in lockstep, yet no retry comes
sooner than half the nominal delay.
"""

import random


def equal_jitter(step: int, *, base: float, cap: float, at_least: float = 0.0, rng=random) -> float:
    """Seconds to wait before retry number `step` (0-based): base * 2**step capped at `cap`, between
    half and all of it, and never less than `at_least` (a provider's Retry-After)."""
    delay = min(cap, base * 2 ** min(max(step, 0), 30))
    return max(delay / 2 + rng.uniform(0, delay / 2), at_least or 0.0)
