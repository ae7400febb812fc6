from django import template

from pipeline.sweeper import queue_depth

register = template.Library()


@register.simple_tag(takes_context=True)
def pipeline_queue_depth(context):
    """Rows waiting in each pipeline stage, for the admin index: a non-superuser counts their own."""
    user = context["request"].user
    return queue_depth(None if user.is_superuser else user)
