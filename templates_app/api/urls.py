from __future__ import annotations

from rest_framework.routers import SimpleRouter

from templates_app.api.views import SandboxTemplateViewSet

router = SimpleRouter(trailing_slash=False)
router.register("templates", SandboxTemplateViewSet, basename="template")
urlpatterns = router.urls
