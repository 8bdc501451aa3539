"""The seed's job and user: a funder with a wallet address pays for a job through opapprove."""

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    # The seed reads ``request.user.wallet_address`` (the funder's Open Payments wallet).
    wallet_address = models.URLField(blank=True)


class Job(models.Model):
    STATUSES = [
        ("open", "open"),
        ("awaiting_payment", "awaiting payment"),
        ("complete", "complete"),
    ]

    title = models.CharField(max_length=200)
    budget = models.DecimalField(max_digits=12, decimal_places=2)
    funder = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    status = models.CharField(max_length=20, choices=STATUSES, default="open")
    # Set by pre_approve_payments from the payments service's answer (the seed's fields).
    payment_url = models.URLField(max_length=1000, blank=True)
    payment_id = models.CharField(max_length=64, blank=True, db_index=True)
    # Set by the payment.completed webhook.
    contract_completed = models.BooleanField(default=False)

    def __str__(self) -> str:
        return self.title
