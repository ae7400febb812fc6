"""Lists place messages by arrival (Message.arrived_at), not by their Date header.

Existing rows get the earliest INTERNALDATE of their locations (when the IMAP server received
them), else the time mailgate stored them.
"""

import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('imap', '0004_folder_history_below_uid'),
        ('inbound', '0001_initial'),
        ('pipeline', '0005_message_arrival_and_history'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='message',
            name='pipeline_msg_owner_keyset',
        ),
        migrations.RemoveIndex(
            model_name='message',
            name='pipeline_msg_account_keyset',
        ),
        migrations.AddField(
            model_name='message',
            name='arrived_at',
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.RunSQL(
            "UPDATE pipeline_message SET arrived_at = COALESCE((SELECT MIN(l.internaldate) FROM imap_messagelocation l"
            " WHERE l.message_id = pipeline_message.id), received_at)",
            migrations.RunSQL.noop),
        migrations.AddIndex(
            model_name='message',
            index=models.Index(fields=['owner', '-arrived_at', '-id'], name='pipeline_msg_owner_arrival'),
        ),
        migrations.AddIndex(
            model_name='message',
            index=models.Index(fields=['account', '-arrived_at', '-id'], name='pipeline_msg_account_arrival'),
        ),
    ]
