"""Settings of the example marketplace; everything that differs per run comes from the environment.

PAYMENTS_SERVICE_URL and DEFAULT_SELLER_ID are the seed's; PAYMENTS_SERVICE_TOKEN is the
bearer token `opapprove listen --api` asks for (its ``api_token``) and PAYMENTS_WEBHOOK_SECRET
its ``webhook_secret``, which signs the webhooks this app receives.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "jobs",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "marketplace.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("MARKETPLACE_DB", str(BASE_DIR / "marketplace.sqlite3")),
    }
}
AUTH_USER_MODEL = "jobs.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "login"
USE_TZ = True

# The seed's settings (interactive-payment-approval.md, "Configuration").
DEFAULT_SELLER_ID = os.environ.get("DEFAULT_SELLER_ID", "default-seller")
PAYMENTS_SERVICE_URL = os.environ.get("PAYMENTS_SERVICE_URL", "http://127.0.0.1:3999")
PAYMENTS_SERVICE_TOKEN = os.environ.get("PAYMENTS_SERVICE_TOKEN", "")
PAYMENTS_WEBHOOK_SECRET = os.environ.get("PAYMENTS_WEBHOOK_SECRET", "")
