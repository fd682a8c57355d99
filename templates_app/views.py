"""Console pages of templates: everyone reads the active ones; staff create, edit and (de)activate."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from sandbox_site.forms import add_serializer_errors
from sandbox_site.views import HtmxHttpRequest, console_login_required
from templates_app.api.serializers import SandboxTemplateSerializer
from templates_app.forms import TemplateForm
from templates_app.models import SandboxTemplate


def visible_templates(request: HtmxHttpRequest):
    templates = SandboxTemplate.objects.order_by("-is_active", "id").annotate(
        live_sessions=Count("sessions", filter=Q(sessions__status__in=("creating", "running")))
    )
    return templates if request.user.is_staff else templates.filter(is_active=True)


@require_GET
@console_login_required
def template_list(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "templates_app/template_list.html", {"templates": visible_templates(request)})


def staff_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Logged in (else the login page) and staff (else 403): only staff change templates, as in the API."""

    @functools.wraps(view)
    def wrapped(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied("Only staff may change templates.")
        return view(request, *args, **kwargs)

    return console_login_required(wrapped)


@require_http_methods(["GET", "POST"])
@staff_only
def template_create(request: HtmxHttpRequest) -> HttpResponse:
    return _template_form(request, None)


@require_http_methods(["GET", "POST"])
@staff_only
def template_edit(request: HtmxHttpRequest, template_id: str) -> HttpResponse:
    return _template_form(request, get_object_or_404(SandboxTemplate, pk=template_id))


def _template_form(request: HtmxHttpRequest, instance: SandboxTemplate | None) -> HttpResponse:
    """Validated and saved by the API's serializer, so the console and the API accept the same templates."""
    form = TemplateForm(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        data = form.api_data()
        if instance is None and SandboxTemplate.objects.filter(pk=data["id"]).exists():
            form.add_error("id", f"template {data['id']!r} exists already")
        else:
            serializer = SandboxTemplateSerializer(instance, data=data)
            if serializer.is_valid():
                template = serializer.save()
                messages.success(request, f"Saved template {template.id}.")
                url = reverse("templates:list") + f"#template-{template.id}"
                return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
            add_serializer_errors(form, serializer.errors)
    context = {"form": form, "instance": instance}
    template = "templates_app/template_form.html#form" if request.htmx else "templates_app/template_form.html"
    status = 400 if request.method == "POST" and not request.htmx else 200
    return render(request, template, context, status=status)


@require_POST
@staff_only
def template_set_active(request: HtmxHttpRequest, template_id: str) -> HttpResponse:
    """Deactivate (no new sessions; existing ones carry on) or reactivate a template."""
    template = get_object_or_404(SandboxTemplate, pk=template_id)
    template.is_active = request.POST.get("active") == "true"
    template.save(update_fields=["is_active", "updated_at"])
    messages.success(
        request, f"Template {template.id} is {'active' if template.is_active else 'deactivated'}."
    )
    if request.htmx:
        context = {"templates": visible_templates(request)}
        return render(request, "templates_app/template_list.html#table", context)
    return redirect("templates:list")
