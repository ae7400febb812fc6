"""What an error report may show: Django's filter hides keys and passwords by name, but a
DATABASE_URL, REDIS_URL or channel-layer address carries its password inside the value."""

import re

from django.views.debug import SafeExceptionReporterFilter


class ConnectionStringsHiddenFilter(SafeExceptionReporterFilter):
    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|URL|ADDRESS|DATABASE|CHANNEL_LAYERS|HTTP_COOKIE",
        flags=re.IGNORECASE)
