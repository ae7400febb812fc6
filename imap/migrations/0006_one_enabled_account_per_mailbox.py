import django.db.models.functions.text
from django.conf import settings
from django.db import migrations, models


def disable_later_copies(apps, schema_editor):
    """An install that already holds the same mailbox twice for one owner keeps the oldest copy
    enabled and disables the others (they stop syncing and relaying; their mail stays), so the
    constraint below can hold. Their owner sees them as disabled on the Accounts page."""
    Account = apps.get_model("imap", "Account")
    seen = set()
    for account in Account.objects.filter(enabled=True).order_by("created_at", "pk"):
        key = (account.owner_id, account.host.lower(), account.username.lower())
        if key in seen:
            Account.objects.filter(pk=account.pk).update(
                enabled=False, last_error="Disabled: the same mailbox is connected as an older account.")
        seen.add(key)


class Migration(migrations.Migration):

    dependencies = [
        ('imap', '0005_oauth2'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(disable_later_copies, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='account',
            constraint=models.UniqueConstraint(models.F('owner'), django.db.models.functions.text.Lower('host'), django.db.models.functions.text.Lower('username'), condition=models.Q(('enabled', True)), name='imap_account_one_enabled_per_mailbox', violation_error_message='This mailbox is already connected (the same server and login).'),
        ),
    ]
