"""The seed's two views (``pre_approve_payments``, ``payments_finish``) and its webhook receiver.

Copied from the seed's design note (interactive-payment-approval.md, "Code Implementation")
and kept as close to it as runs: the payments service is ``opapprove listen --api``.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from jobs.models import Job
from jobs.payments import finish, get_wallet_profile, start_quote
from jobs.webhooks import signature_ok

FINISH_PARAMS = ("pendingId", "interact_ref", "hash", "result")


@login_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=pk, funder=request.user)
    return render(request, "jobs/detail.html", {"job": job})


@login_required
@require_POST
def pre_approve_payments(request: HttpRequest, pk: int) -> HttpResponse:
    """Start interactive payment approval flow"""
    job = get_object_or_404(Job, pk=pk, funder=request.user)

    # Validate prerequisites
    if not request.user.wallet_address:
        messages.error(request, "Configure wallet address first")
        return redirect("jobs:detail", pk=job.pk)

    # Validate wallet
    wallet_result = get_wallet_profile(request.user.wallet_address)
    if not wallet_result.get("success"):
        messages.error(request, "Invalid wallet address")
        return redirect("jobs:detail", pk=job.pk)

    # Start quote flow
    result = start_quote(
        offer_id=str(job.pk),
        seller_id=settings.DEFAULT_SELLER_ID,
        buyer_wallet_address_url=request.user.wallet_address,
        amount=str(job.budget),
    )

    if result.get("success"):
        # Store payment URL for user to approve
        job.payment_url = result.get("payment_url")
        job.payment_id = result.get("pending_id")
        job.status = "awaiting_payment"
        job.save()

        messages.success(request, "Ready to approve payment!")
        return redirect("jobs:detail", pk=job.pk)

    messages.error(request, f"Failed to initialize payment: {result.get('error')}")
    return redirect("jobs:detail", pk=job.pk)


@require_GET
def payments_finish(request: HttpRequest) -> HttpResponse:
    """Handle wallet redirect after approval"""
    pending_id = request.GET.get("pendingId", "")
    params = {k: request.GET[k] for k in FINISH_PARAMS if k in request.GET}

    # Proxy to payments service to complete grant
    status = finish(params)

    job = Job.objects.filter(payment_id=pending_id).first() if pending_id else None
    if job is None:
        return HttpResponse("Unknown payment.", status=404)
    if status == 200 and params.get("result") != "grant_rejected":
        messages.success(request, "Payment completed!")
    else:
        messages.error(request, "The payment was not completed.")
    return redirect("jobs:detail", pk=job.pk)


@csrf_exempt
@require_POST
def payment_webhook(request: HttpRequest) -> HttpResponse:
    """``payment.completed`` from the payments service: the job is paid, the contract done."""
    header = request.headers.get("Opapprove-Signature")
    if not signature_ok(request.body, header, settings.PAYMENTS_WEBHOOK_SECRET):
        return JsonResponse({"ok": False, "error": "bad or missing signature"}, status=401)
    try:
        event = json.loads(request.body)
    except ValueError:
        return JsonResponse({"ok": False, "error": "body is not JSON"}, status=400)
    if event.get("type") == "payment.completed" and event.get("status") == "paid":
        # Idempotent: a repeated delivery sets the same fields again.
        Job.objects.filter(payment_id=event.get("pendingId", "")).update(
            contract_completed=True, status="complete"
        )
    return JsonResponse({"ok": True})
