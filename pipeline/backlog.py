"""What waits in each pipeline stage, for /metrics (mailgate_queue_depth and
mailgate_queue_oldest_age_seconds, read at scrape time).

Three small indexed queries whatever the table sizes: messages waiting for standardize or
distribute use the partial index pipeline_msg_unfinished (status, updated_at), due deliveries the
partial index pipeline_delivery_due (not_before).
"""

from django.db.models import Count, Min

from pipeline import clock
from pipeline.models import Delivery, Message

_STAGE_OF = {Message.Status.RECEIVED: "standardize", Message.Status.STANDARDIZED: "distribute"}


def backlog() -> list[tuple[str, int, float]]:
    """[(stage, waiting, age of the oldest in seconds)] for standardize, distribute and send.

    A message's age counts from its last change (updated_at: when it reached the stage, or the
    sweeper's last re-enqueue); a delivery's from when it became due (not_before), so one held
    back by a window or a backoff is not counted until it may go."""
    now = clock.now()
    found = {stage: (0, 0.0) for stage in (*_STAGE_OF.values(), "send")}
    rows = (Message.objects.filter(status__in=list(_STAGE_OF)).order_by().values("status")
            .annotate(waiting=Count("pk"), oldest=Min("updated_at")))
    for row in rows:
        found[_STAGE_OF[row["status"]]] = (row["waiting"], _age(now, row["oldest"]))
    due = (Delivery.objects.filter(status__in=[Delivery.Status.SCHEDULED, Delivery.Status.RETRYING],
                                   not_before__lte=now)
           .aggregate(waiting=Count("pk"), oldest=Min("not_before")))
    found["send"] = (due["waiting"], _age(now, due["oldest"]))
    return [(stage, waiting, age) for stage, (waiting, age) in found.items()]


def _age(now, since) -> float:
    return max(0.0, (now - since).total_seconds()) if since else 0.0
