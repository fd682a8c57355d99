"""Template endpoints: anyone authenticated reads active templates; staff write."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import permissions, viewsets
from rest_framework.response import Response

from sandbox_site.api.errors import ApiError
from sandbox_site.api.schema import error_responses
from templates_app.api.serializers import SandboxTemplateSerializer
from templates_app.models import SandboxTemplate
from templates_app.services import TemplateInUse, template_delete


class StaffWritesOnly(permissions.BasePermission):
    message = "Only staff may change templates."

    def has_permission(self, request, view) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        return bool(request.user and request.user.is_staff)


@extend_schema_view(
    list=extend_schema(responses={200: SandboxTemplateSerializer(many=True), **error_responses(401)}),
    retrieve=extend_schema(responses={200: SandboxTemplateSerializer, **error_responses(401, 404)}),
    create=extend_schema(responses={201: SandboxTemplateSerializer, **error_responses(400, 401, 403, 409)}),
    update=extend_schema(responses={200: SandboxTemplateSerializer, **error_responses(400, 401, 403, 404)}),
    partial_update=extend_schema(
        responses={200: SandboxTemplateSerializer, **error_responses(400, 401, 403, 404)}
    ),
    destroy=extend_schema(responses={204: None, **error_responses(401, 403, 404, 409)}),
)
class SandboxTemplateViewSet(viewsets.ModelViewSet):
    serializer_class = SandboxTemplateSerializer
    permission_classes = [permissions.IsAuthenticated, StaffWritesOnly]
    lookup_value_regex = "[^/]+"
    pagination_class = None

    def get_queryset(self):
        templates = SandboxTemplate.objects.all()
        if not self.request.user.is_staff:
            templates = templates.active()
        return templates

    def get_object(self):
        template = self.get_queryset().filter(pk=self.kwargs["pk"]).first()
        if template is None:
            raise ApiError(404, "template_not_found", f"no template {self.kwargs['pk']!r}")
        self.check_object_permissions(self.request, template)
        return template

    def perform_create(self, serializer):
        if SandboxTemplate.objects.filter(pk=serializer.validated_data["id"]).exists():
            raise ApiError(
                409, "duplicate_id", f"template {serializer.validated_data['id']!r} exists already"
            )
        serializer.save()

    def destroy(self, request, *args, **kwargs):
        try:
            template_delete(template=self.get_object())
        except TemplateInUse as exc:
            raise ApiError(409, "template_in_use", str(exc)) from None
        return Response(status=204)
