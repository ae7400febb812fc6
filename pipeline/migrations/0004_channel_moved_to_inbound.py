# The channel foreign keys follow InboundChannel from the outgoing app to the inbound app. State
# only: the table they point at is the same one (inbound keeps outgoing's table name), so the
# columns and their constraints stay as they are.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('inbound', '0001_initial'),
        ('pipeline', '0003_message_status_gone'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='message',
                    name='channel',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='messages', to='inbound.inboundchannel'),
                ),
                migrations.AlterField(
                    model_name='purgedidentity',
                    name='channel',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='inbound.inboundchannel'),
                ),
                migrations.AlterField(
                    model_name='route',
                    name='channel',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, to='inbound.inboundchannel'),
                ),
            ],
            database_operations=[],
        ),
    ]
