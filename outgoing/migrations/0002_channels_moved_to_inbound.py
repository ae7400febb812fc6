# InboundChannel and WebhookReplay now belong to the inbound app (inbound/migrations/0001). State
# only: the tables stay, under their old names, and are the inbound app's from here on.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('outgoing', '0001_initial'),
        ('inbound', '0001_initial'),
        # The foreign keys to InboundChannel point at the inbound app's model first.
        ('pipeline', '0004_channel_moved_to_inbound'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='WebhookReplay'),
                migrations.DeleteModel(name='InboundChannel'),
            ],
            database_operations=[],
        ),
    ]
