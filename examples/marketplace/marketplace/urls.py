from django.contrib.auth import views as auth_views
from django.urls import include, path
from jobs import views

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("jobs/", include("jobs.urls")),
    # The seed's routes: the wallet's redirect and the payments service's webhook.
    path("payments/finish", views.payments_finish, name="payments_finish"),
    path("api/webhooks/payments", views.payment_webhook, name="payment_webhook"),
]
