"""Console forms of sessions and API keys: text in, API-shaped data out (see sandbox_site/forms.py)."""

from __future__ import annotations

import re
from typing import Any

from django import forms

from sandbox_site.forms import parse_lines, parse_pairs
from templates_app.models import SandboxTemplate

# Where a dependency line's version part starts: the first comparison operator.
_SPEC_START = re.compile(r"[=<>!~]")
DEFAULT_TEMPLATE = "python-basic"


class SessionCreateForm(forms.Form):
    template_id = forms.ChoiceField(label="Template")
    cpu = forms.CharField(required=False, label="CPU cores", help_text="e.g. 1, 0.5 or 500m")
    memory = forms.CharField(required=False, help_text="e.g. 512Mi or 2Gi")
    disk = forms.CharField(required=False, help_text="e.g. 1Gi")
    timeout = forms.IntegerField(required=False, label="Idle timeout (s)")
    env_vars = forms.CharField(
        required=False,
        label="Environment variables",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "NAME=value, one per line"}),
    )
    dependencies = forms.CharField(
        required=False,
        label="Python dependencies",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "one per line: requests or pandas==2.2"}),
    )
    metadata = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "key=value, one per line"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        templates = SandboxTemplate.objects.active().order_by("id")
        self.fields["template_id"].choices = [(t.id, f"{t.id} – {t.name}") for t in templates]
        self.templates = {t.id: t for t in templates}
        if not self.initial.get("template_id"):
            # Python first, as the code runner and the API's examples: not whatever sorts first (nodejs-…).
            python = [t.id for t in templates if "python" in t.id]
            if python:
                self.initial["template_id"] = DEFAULT_TEMPLATE if DEFAULT_TEMPLATE in python else python[0]

    def clean_env_vars(self) -> dict[str, str]:
        return parse_pairs(self.cleaned_data["env_vars"], what="NAME=value")

    def clean_metadata(self) -> dict[str, str]:
        return parse_pairs(self.cleaned_data["metadata"], what="key=value")

    def clean_dependencies(self) -> list[dict[str, str]]:
        dependencies = []
        for line in parse_lines(self.cleaned_data["dependencies"]):
            match = _SPEC_START.search(line)
            if match:
                dependencies.append({"name": line[: match.start()].strip(), "version": line[match.start() :]})
            else:
                dependencies.append({"name": line})
        return dependencies

    def api_data(self) -> dict[str, Any]:
        """The body the REST API would receive for this form; only what the user filled in."""
        data: dict[str, Any] = {"template_id": self.cleaned_data["template_id"]}
        for name in ("cpu", "memory", "disk"):
            if self.cleaned_data.get(name):
                data[name] = self.cleaned_data[name].strip()
        if self.cleaned_data.get("timeout") is not None:
            data["timeout"] = self.cleaned_data["timeout"]
        for name in ("env_vars", "dependencies", "metadata"):
            if self.cleaned_data.get(name):
                data[name] = self.cleaned_data[name]
        return data


class FileUploadForm(forms.Form):
    file = forms.FileField()
    directory = forms.CharField(required=False, widget=forms.HiddenInput)


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="What the key is for, e.g. 'ci agent'.")
