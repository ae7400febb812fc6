# EventSequence moved to the mailgate app (the ground of the stack). The table stays; only Django's
# idea of which app owns it changes, here and in mailgate/migrations/0001_initial.py.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('frontend', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='EventSequence')],
            database_operations=[],
        ),
    ]
