from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("pipeline", "0002_purged_identity"),
    ]

    operations = [
        migrations.AlterField(
            model_name="message",
            name="status",
            field=models.CharField(
                choices=[
                    ("headers", "Headers stored, body pending"),
                    ("too_large", "Too large: metadata only, body not downloaded"),
                    ("gone", "Deleted on the server before its body was downloaded"),
                    ("received", "Raw bytes stored, waiting to standardize"),
                    ("standardized", "Standardized, waiting to distribute"),
                    ("distributed", "Routed and queued to subscribers"),
                    ("suppressed", "Not relayed (loop, auto-reply or bounce)"),
                    ("dead", "Gave up after repeated crashes"),
                ],
                default="received",
                max_length=16,
            ),
        ),
    ]
