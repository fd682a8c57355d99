"""Console form of templates: text in, the REST API's template body out (rules: SandboxTemplateSerializer
and the model's validators)."""

from __future__ import annotations

from typing import Any

from django import forms

from runtime import available_runtimes
from sandbox_site.forms import parse_lines, parse_pairs
from templates_app.models import LanguageRuntime, SandboxBackend, SandboxTemplate

FIELDS = (
    "id",
    "name",
    "description",
    "image_url",
    "runtime_type",
    "sandbox_backend",
    "default_cpu_cores",
    "default_memory_mb",
    "default_disk_mb",
    "default_timeout_sec",
    "warm_pool_size",
    "is_active",
)


def installed_backends() -> list[tuple[str, str]]:
    """The model's backend choices that this installation's registry has (and the blank default)."""
    return [
        (value, label)
        for value, label in SandboxBackend.choices
        if not value or value in available_runtimes()
    ]


class TemplateForm(forms.Form):
    id = forms.CharField(label="Id", help_text="What agents pass as template_id; fixed once created.")
    name = forms.CharField()
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    image_url = forms.CharField(
        label="Image", help_text="Container image for the docker/kubernetes runtimes."
    )
    runtime_type = forms.ChoiceField(
        choices=LanguageRuntime.choices,
        initial=LanguageRuntime.PYTHON,
        label="Language runtime",
        help_text="Sessions need an available one (python3.11, nodejs20).",
    )
    sandbox_backend = forms.ChoiceField(choices=installed_backends, required=False, label="Sandbox backend")
    default_cpu_cores = forms.DecimalField(label="CPU cores", initial=1)
    default_memory_mb = forms.IntegerField(label="Memory (MiB)", initial=512)
    default_disk_mb = forms.IntegerField(label="Disk (MiB)", initial=1024)
    default_timeout_sec = forms.IntegerField(label="Idle timeout (s)", initial=300)
    warm_pool_size = forms.IntegerField(label="Warm pool size", initial=0)
    is_active = forms.BooleanField(required=False, initial=True, label="Active (new sessions allowed)")
    default_env_vars = forms.CharField(
        required=False,
        label="Default environment",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "NAME=value, one per line"}),
    )
    pre_installed_packages = forms.CharField(
        required=False,
        label="Pre-installed packages",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "one per line"}),
    )

    def __init__(self, *args: Any, instance: SandboxTemplate | None = None, **kwargs: Any) -> None:
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = {name: getattr(instance, name) for name in FIELDS} | {
                "default_env_vars": "\n".join(f"{k}={v}" for k, v in instance.default_env_vars.items()),
                "pre_installed_packages": "\n".join(instance.pre_installed_packages),
            }
        super().__init__(*args, **kwargs)
        self.instance = instance
        if instance is not None:
            self.fields["id"].disabled = True

    def clean_default_env_vars(self) -> dict[str, str]:
        return parse_pairs(self.cleaned_data["default_env_vars"], what="NAME=value")

    def clean_pre_installed_packages(self) -> list[str]:
        return parse_lines(self.cleaned_data["pre_installed_packages"])

    def api_data(self) -> dict[str, Any]:
        data = {name: self.cleaned_data[name] for name in FIELDS}
        data["sandbox_backend"] = data["sandbox_backend"] or ""
        data["default_env_vars"] = self.cleaned_data["default_env_vars"]
        data["pre_installed_packages"] = self.cleaned_data["pre_installed_packages"]
        return data
