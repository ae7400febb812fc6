"""An index for pipeline/broker.py: each poll takes a lane's queued tasks ordered by (key, id).

django-q's queue table has none on `key`; with a backlog queued one task per message (an import
of 10,000 messages) every poll would sort the whole table. The table is django-q's, so the index
is plain SQL (the same on SQLite and PostgreSQL) and goes with this app.
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("pipeline", "0008_message_noaccount_arrival_index"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.RunSQL(
            'CREATE INDEX IF NOT EXISTS pipeline_ormq_key_id ON django_q_ormq ("key", id)',
            "DROP INDEX IF EXISTS pipeline_ormq_key_id",
        ),
    ]
