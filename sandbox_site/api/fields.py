"""Serializer fields shared by every app's API."""

from __future__ import annotations

import copy

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A string, and only a string: DRF's CharField would quietly turn 42 into "42"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class BuiltOnceModelSerializer(serializers.ModelSerializer):
    """A ModelSerializer that builds its fields from the model once per class, not once per instance.

    DRF's ModelSerializer inspects the model and builds every field (build_field, get_field_kwargs) each time
    a serializer is instantiated: about a millisecond of CPU per response on the execute-sync path. The built
    fields depend only on the class here (no serializer of ours builds fields from its context or instance),
    so the first instance keeps them and later ones get a deep copy, as DRF already does with declared fields.
    """

    def get_fields(self):
        cls = type(self)
        built = cls.__dict__.get("_built_fields")
        if built is None:
            built = super().get_fields()
            cls._built_fields = built  # a race only builds it twice
        return copy.deepcopy(built)
