"""A job's options on the wire: the create and update fields of `JobOptions` (API.md §2)."""

from __future__ import annotations

from typing import Any

from uploader._job import JobOptions

__all__ = ["create_fields", "update_fields"]


def create_fields(options: JobOptions) -> dict[str, Any]:
    """The create request's fields for these options (only those given)."""
    fields = update_fields(options)
    if options.model_version is not None:
        fields["model_version"] = options.model_version
    if options.edition is not None:
        fields["is_flexus"] = options.edition == "flexus"
        fields["is_fast_flexus"] = options.edition == "fast-flexus"
    return fields


def update_fields(options: JobOptions) -> dict[str, Any]:
    """The fields an update may change (model version and edition cannot)."""
    fields: dict[str, Any] = {}
    if options.background_replacement is not None:
        fields["is_background_replacement"] = options.background_replacement
    if options.services:
        fields["supported_service"] = list(options.services)
    if options.human_only is not None:
        fields["is_only_human_model"] = options.human_only
    voice = {k: v for k, v in (("job_tag", options.voice_tag), ("sex", options.voice_sex),
                               ("language", options.voice_language)) if v is not None}
    if voice:
        fields["voice_properties"] = voice
    return fields
