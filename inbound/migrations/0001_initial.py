# The inbound channel models moved here from the outgoing app. State only: their tables keep the
# names outgoing gave them (db_table), so no row moves and no table is created or dropped.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

MOVED = ["inboundchannel", "webhookreplay"]


def move_content_types(apps, schema_editor, source="outgoing", target="inbound"):
    """Admin log entries and staff permissions point at content types: keep them by moving the
    models' content types along (on a fresh database there are none yet)."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    for model in MOVED:
        if not ContentType.objects.using(db).filter(app_label=target, model=model).exists():
            ContentType.objects.using(db).filter(app_label=source, model=model).update(app_label=target)


def move_content_types_back(apps, schema_editor):
    move_content_types(apps, schema_editor, source="inbound", target="outgoing")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("contenttypes", "0002_remove_content_type_name"),
        ("outgoing", "0001_initial"),  # created the tables
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='InboundChannel',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('secrets_encrypted', models.TextField(blank=True, editable=False)),
                        ('kind', models.CharField(choices=[('twilio', 'Twilio SMS'), ('telegram', 'Telegram bot'), ('generic', 'Signed JSON')], max_length=16)),
                        ('name', models.CharField(max_length=200)),
                        ('token', models.CharField(max_length=64, unique=True)),
                        ('config', models.JSONField(blank=True, default=dict)),
                        ('enabled', models.BooleanField(default=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('owner', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='channels', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'outgoing_inboundchannel',
                        'ordering': ['name'],
                        'constraints': [
                            models.UniqueConstraint(fields=('owner', 'name'), name='outgoing_channel_unique_name'),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name='WebhookReplay',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('signature', models.CharField(max_length=200)),
                        ('seen_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                        ('channel', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='inbound.inboundchannel')),
                    ],
                    options={
                        'db_table': 'outgoing_webhookreplay',
                        'constraints': [
                            models.UniqueConstraint(fields=('channel', 'signature'), name='outgoing_webhook_replay_once'),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_types, move_content_types_back, elidable=True),
    ]
