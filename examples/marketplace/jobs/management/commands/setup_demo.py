"""``manage.py setup_demo``: migrate, then one funder (with a wallet address) and one job."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand

from jobs.models import Job, User


class Command(BaseCommand):
    help = "Create the database, a funder and a job to pay for."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="funder")
        parser.add_argument("--password", required=True)
        parser.add_argument("--wallet", required=True, help="the funder's wallet address URL")
        parser.add_argument("--budget", default="12.34")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", verbosity=0)
        funder = User.objects.create_user(
            options["username"], password=options["password"], wallet_address=options["wallet"]
        )
        job = Job.objects.create(
            title="Logo design", budget=Decimal(options["budget"]), funder=funder
        )
        self.stdout.write(str(job.pk))
