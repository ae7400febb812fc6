"""Vectors beside the messages they came from. Deleting a message (retention, delete forever, an
account removed) deletes its vectors by the foreign key; the in-process indexes notice through
VectorScope.generation (see index.py)."""

from django.conf import settings
from django.db import models
from django.db.models import Q

DIMENSIONS = 256


class MessageVector(models.Model):
    """One chunk of one message as a 256-dim int8 vector (256 bytes: a quarter of float32, and the
    cosine ranking of int8 WordLlama vectors matches float32's on the bench). Rows are only ever
    inserted or deleted, never updated, so `id` tells an index what it has not read yet."""

    message = models.ForeignKey("pipeline.Message", on_delete=models.CASCADE, related_name="vectors")
    position = models.PositiveSmallIntegerField()  # chunk number within the message
    # Metadata copied from the message so a scope's index is read without a join. The scope is
    # the account for account mail (access follows the account, whoever owns it now), else the owner.
    account = models.ForeignKey("imap.Account", on_delete=models.CASCADE, null=True, blank=True,
                                related_name="+")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    date = models.DateTimeField(null=True, blank=True)  # the message's arrived_at
    vector = models.BinaryField()  # DIMENSIONS int8 values

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "position"], name="semantic_vector_unique_chunk"),
        ]
        indexes = [
            # An index loads and tops up one scope in id order (index.py).
            models.Index(fields=["account", "id"], name="semantic_vector_account"),
            models.Index(fields=["owner", "id"], name="semantic_vector_owner_mail",
                         condition=Q(account__isnull=True)),
        ]


class PendingEmbedding(models.Model):
    """A message standardized and not embedded yet, written in standardize's transaction: the
    durable to-do list of the embed step. A task embeds a batch of these, not only its own message,
    so one queued task per message still costs one model call per batch."""

    message = models.OneToOneField("pipeline.Message", on_delete=models.CASCADE, primary_key=True,
                                   related_name="+")
    queued_at = models.DateTimeField(db_index=True)


class VectorScope(models.Model):
    """Bumped when vectors of a scope are deleted or replaced, so every process's index of that
    scope is rebuilt on its next query (additions are read incrementally by id instead)."""

    key = models.CharField(max_length=40, primary_key=True)  # "a<account id>" or "u<owner id>"
    generation = models.PositiveBigIntegerField(default=0)
