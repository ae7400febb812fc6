from django import template

from pipeline.sweeper import queue_depth

register = template.Library()


@register.simple_tag
def pipeline_queue_depth():
    """Rows waiting in each pipeline stage, for the admin index."""
    return queue_depth()
