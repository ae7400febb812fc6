"""The base every outgoing service class extends."""

from django.core.exceptions import ValidationError

from outgoing import formatting
from outgoing.errors import TransportError
from outgoing.http import validate_url

# Keys every kind accepts: the message template, the HTTP/SMTP timeout in seconds, and the
# address the admin "Send test" action uses when none is typed in.
COMMON_CONFIG = ("template", "timeout", "test_address")
LONG_MESSAGES = ("split", "truncate")
MAX_PARTS_LIMIT = 10  # progress ids of every part must fit Delivery.remote_id (500 chars)
DEFAULT_TIMEOUT = 15.0


def timeout_of(config) -> float:
    """Seconds a service's server may take to answer one request (its config's "timeout")."""
    return float((config or {}).get("timeout") or DEFAULT_TIMEOUT)


class Transport:
    """One outgoing service kind. Subclasses set `kind`, validate config, and implement send()."""

    kind = ""
    # Keys of `config` each kind requires / accepts; secrets live in Service.get_secrets().
    required_config: tuple[str, ...] = ()
    optional_config: tuple[str, ...] = ()
    required_secrets: tuple[str, ...] = ()
    optional_secrets: tuple[str, ...] = ()
    # What a subscription's address means for this kind ("" when the service has one fixed target).
    address_label = ""
    # Where messages longer than the medium allows are split (see formatting.split_runs).
    default_max_parts = 1
    # A new service's sends per minute when its form leaves the limit blank (0: none of our own).
    # Chat and SMS APIs allow about a message a second per chat or number.
    default_rate_per_minute = 60

    def __init__(self, service):
        self.service = service
        self.config = service.config or {}
        self.secrets = service.get_secrets()

    # ---------------------------------------------------------------- validation

    @classmethod
    def secret_names(cls) -> tuple[str, ...]:
        return cls.required_secrets + cls.optional_secrets

    @classmethod
    def validate(cls, config: dict, secrets: dict) -> None:
        """Raise ValidationError naming every missing or malformed field.

        Errors are keyed "config" (the message names the key, e.g. "config.port: ...") or by the
        secret's own name, which is also the admin form's field for it.
        """
        if not isinstance(config, dict):
            raise ValidationError({"config": [f"{cls.kind}: config must be a JSON object"]})
        errors: dict[str, list[str]] = {}
        for key, message in cls._common_errors(config, secrets) + list(cls.check(config, secrets)):
            errors.setdefault(key, []).append(message)
        if errors:
            raise ValidationError(errors)

    @classmethod
    def _common_errors(cls, config, secrets):
        found = []
        known = set(cls.required_config + cls.optional_config + COMMON_CONFIG)
        for key in cls.required_config:
            if config.get(key) in (None, ""):
                found.append(("config", f"config.{key}: required for {cls.kind}"))
        for key in sorted(set(config) - known):
            found.append(("config", f"config.{key}: unknown key for {cls.kind} (known: {', '.join(sorted(known))})"))
        for key in cls.required_secrets:
            if not secrets.get(key):
                found.append((key, f"secrets.{key}: required for {cls.kind}"))
        if "template" in config:
            problem = formatting.template_error(config["template"])
            if problem:
                found.append(("config", f"config.template: {problem}"))
        if "timeout" in config and not _number_in(config["timeout"], 1, 300):
            found.append(("config", "config.timeout: seconds between 1 and 300"))
        if "long_messages" in config and config["long_messages"] not in LONG_MESSAGES:
            found.append(("config", f"config.long_messages: one of {', '.join(LONG_MESSAGES)}"))
        if "max_parts" in config and not (_number_in(config["max_parts"], 1, MAX_PARTS_LIMIT)
                                          and isinstance(config["max_parts"], int)):
            found.append(("config", f"config.max_parts: a whole number from 1 to {MAX_PARTS_LIMIT}"))
        if "api_base" in config:
            problem = validate_url(config["api_base"], "config.api_base")
            if problem:
                found.append(("config", problem))
        return found

    @classmethod
    def check(cls, config: dict, secrets: dict):
        """Kind-specific checks: yield (field, message) pairs."""
        return ()

    # ---------------------------------------------------------------- sending

    def send(self, message, delivery) -> str:
        """Send `message` for `delivery`; return the remote id or ''.

        `message` is the pipeline's message (or the admin's unsaved sample, outgoing.sending);
        `delivery` has `pk`, `address`, `remote_id` and `record_progress(remote_id)`."""
        raise NotImplementedError

    @property
    def timeout(self) -> float:
        return timeout_of(self.config)

    @property
    def max_parts(self) -> int:
        if self.config.get("long_messages") == "truncate":
            return 1
        return int(self.config.get("max_parts") or self.default_max_parts)

    def recipient(self, delivery, config_key: str) -> str:
        """The subscription's address, else the service's default target in config[config_key]."""
        address = str(getattr(delivery, "address", "") or self.config.get(config_key) or "").strip()
        if not address:
            raise TransportError(
                f"no {self.address_label or 'recipient'}: set the subscription's address or config.{config_key}",
                permanent=True)
        return address

    def run_steps(self, delivery, steps) -> str:
        """Run the requests of a multi-request send (message parts, then files), skipping those a
        previous attempt completed, so a retry after a failure half-way sends no part twice.

        Progress is the comma-separated remote ids in delivery.remote_id, handed after each step
        to delivery.record_progress(), which keeps it (the pipeline's Delivery: on its row).
        """
        done = [part for part in (getattr(delivery, "remote_id", "") or "").split(",") if part]
        for step in steps[len(done):]:
            done.append(str(step() or "-").replace(",", " "))
            delivery.record_progress(",".join(done))
        return ",".join(done)


def _number_in(value, low, high) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
