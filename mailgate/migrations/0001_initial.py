# EventSequence came from the frontend app with its table (frontend_eventsequence): on a database
# that has the table this only records the model in mailgate's state; on a fresh one frontend's
# 0001 creates the table first.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('auth', '0012_alter_user_first_name_max_length'),
        ('frontend', '0002_move_eventsequence_to_mailgate'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='EventSequence',
                    fields=[
                        ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='+', serialize=False, to=settings.AUTH_USER_MODEL)),
                        ('value', models.BigIntegerField(default=0)),
                    ],
                    options={'db_table': 'frontend_eventsequence'},
                ),
            ],
            database_operations=[],
        ),
    ]
