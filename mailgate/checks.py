"""System checks: `manage.py check` fails when settings could lose or endlessly retry work."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.compatibility)
def check_task_queue(app_configs=None, **kwargs):
    q = getattr(settings, "Q_CLUSTER", {})
    errors = []
    if q.get("orm") is None:
        errors.append(Error(
            "Q_CLUSTER must use the ORM broker ('orm': 'default').",
            hint="Other brokers lose a task that was in flight when its worker died.",
            id="mailgate.E001",
        ))
    timeout, retry = q.get("timeout"), q.get("retry")
    if not timeout or timeout <= 0:
        errors.append(Error(
            "Q_CLUSTER['timeout'] must be a positive number of seconds.",
            hint="Without it a hung task holds its worker forever.",
            id="mailgate.E002",
        ))
    elif not retry or retry <= timeout:
        errors.append(Error(
            f"Q_CLUSTER['retry'] ({retry}) must be greater than 'timeout' ({timeout}).",
            hint="Otherwise a slow task is handed to a second worker while the first still runs it.",
            id="mailgate.E003",
        ))
    max_attempts = q.get("max_attempts")
    if not isinstance(max_attempts, int) or max_attempts <= 0:
        errors.append(Error(
            "Q_CLUSTER['max_attempts'] must be a finite number above zero.",
            hint="0 means retry forever: a poison task would loop endlessly.",
            id="mailgate.E004",
        ))
    if settings.MAILGATE_IDLE_RENEW > 1740 or settings.MAILGATE_IDLE_RENEW < 10:
        errors.append(Error(
            f"MAILGATE_IDLE_RENEW={settings.MAILGATE_IDLE_RENEW} is outside 10..1740 seconds.",
            hint="RFC 2177: servers may drop an IDLE after 30 minutes; renew before 29.",
            id="mailgate.E005",
        ))
    return errors


@register(Tags.compatibility)
def check_webhook_media_budget(app_configs=None, **kwargs):
    seconds = settings.MAILGATE_WEBHOOK_MEDIA_SECONDS
    if not 1 <= seconds <= 14:
        return [Error(
            f"MAILGATE_WEBHOOK_MEDIA_SECONDS={seconds} is outside 1..14 seconds.",
            hint="Webhook media are downloaded while the provider waits, and Twilio gives up after 15 s; "
                 "below 1 s nothing could be downloaded.",
            id="mailgate.E006",
        )]
    return []


@register(Tags.security, deploy=True)
def check_private_targets(app_configs=None, **kwargs):
    exposed = getattr(settings, "EXPOSED", "")
    if settings.MAILGATE_ALLOW_PRIVATE_TARGETS and exposed:
        return [Warning(
            f"MAILGATE_ALLOW_PRIVATE_TARGETS is on, and this install is reachable by others ({exposed}).",
            hint="Every owner of a service or webhook channel can then make mailgate connect to this machine "
                 "and its private network (local admin APIs, cloud metadata). Turn it off unless all of them "
                 "are trusted with that.",
            id="mailgate.W001",
        )]
    return []


@register(Tags.compatibility)
def check_stage_deadline(app_configs=None, **kwargs):
    deadline = settings.MAILGATE_STAGE_DEADLINE
    timeout = getattr(settings, "Q_CLUSTER", {}).get("timeout") or 0
    if deadline <= timeout:
        return [Error(
            f"MAILGATE_STAGE_DEADLINE ({deadline}) must be greater than MAILGATE_TASK_TIMEOUT ({timeout}).",
            hint="A claimed stage or send is taken over once its lease (the stage deadline) passes; the task "
                 "timeout must end a hung send first, or another worker sends it again while it still runs.",
            id="mailgate.E007",
        )]
    if settings.MAILGATE_SEND_BATCH_SECONDS >= timeout:
        return [Error(
            f"MAILGATE_SEND_BATCH_SECONDS ({settings.MAILGATE_SEND_BATCH_SECONDS}) must be less than "
            f"MAILGATE_TASK_TIMEOUT ({timeout}).",
            hint="A send task stops starting sends that could end past it, so that the task timeout never kills "
                 "its worker mid-send (which sends that message again).",
            id="mailgate.E010",
        )]
    return []


@register(Tags.compatibility)
def check_storage(app_configs=None, **kwargs):
    """MAILGATE_STORAGE_URL and its S3 variables (mailgate/storage_url.py); nothing is contacted
    here, so `manage.py check` stays fast and works offline."""
    errors = []
    reason = getattr(settings, "MAILGATE_STORAGE_ERROR", "")
    if reason:
        errors.append(Error(
            reason, hint="See README \"Object storage\". Raw mail and attachments cannot be stored or read until "
                         "this is fixed.",
            id="mailgate.E008"))
    grace = settings.MAILGATE_STORAGE_ORPHAN_HOURS * 3600
    if grace <= settings.MAILGATE_STAGE_DEADLINE:
        errors.append(Error(
            f"MAILGATE_STORAGE_ORPHAN_HOURS ({settings.MAILGATE_STORAGE_ORPHAN_HOURS}) must be longer than "
            f"MAILGATE_STAGE_DEADLINE ({settings.MAILGATE_STAGE_DEADLINE} s).",
            hint="A stage writes its objects before its row commits; a shorter grace age lets the retention job "
                 "remove an object that a running stage is about to point at.",
            id="mailgate.E009"))
    return errors
