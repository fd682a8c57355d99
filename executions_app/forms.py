"""The console's code runner form: text in, the REST API's execute body out (rules live in ExecuteSerializer)."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from executions_app.models import Language

EXAMPLE_CODE = """def handler(event, context):
    name = event.get("name", "world")
    print(f"hello, {name}")
    return {"greeting": f"hello, {name}"}
"""


class ExecuteForm(forms.Form):
    language = forms.ChoiceField(choices=Language.choices, initial=Language.PYTHON)
    code = forms.CharField(
        strip=False, widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "class": "code"})
    )
    event = forms.CharField(
        required=False,
        label="Event (JSON object)",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "code", "placeholder": "{}"}),
    )
    timeout = forms.IntegerField(required=False, initial=30, label="Timeout (s)")

    def clean_code(self) -> str:
        # Browsers send textarea line breaks as CRLF; a stray \r breaks shell scripts.
        return self.cleaned_data["code"].replace("\r\n", "\n")

    def clean_event(self) -> Any:
        text = self.cleaned_data["event"].strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None

    def api_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"language": self.cleaned_data["language"], "code": self.cleaned_data["code"]}
        if self.cleaned_data.get("event") is not None:
            data["event"] = self.cleaned_data["event"]
        if self.cleaned_data.get("timeout") is not None:
            data["timeout"] = self.cleaned_data["timeout"]
        return data
