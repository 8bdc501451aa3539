from django.urls import path

from jobs import views

app_name = "jobs"
urlpatterns = [
    path("<int:pk>/", views.job_detail, name="detail"),
    path("<int:pk>/pre-approve-payments", views.pre_approve_payments, name="pre_approve_payments"),
]
