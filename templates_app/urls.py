"""Console routes of templates (the REST API's are in templates_app/api/urls.py)."""

from __future__ import annotations

from django.urls import path

from templates_app import views

app_name = "templates"

urlpatterns = [
    path("templates/", views.template_list, name="list"),
    path("templates/new/", views.template_create, name="create"),
    path("templates/<str:template_id>/edit/", views.template_edit, name="edit"),
    path("templates/<str:template_id>/active/", views.template_set_active, name="set-active"),
]
