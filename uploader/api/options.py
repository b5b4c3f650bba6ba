"""A job's model options on the wire: the create and update fields (API.md §2)."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["ModelOptions", "create_fields", "update_fields"]


class ModelOptions(Protocol):
    """The options of the model a job trains, as `uploader.JobOptions` holds them (checked
    there): what the wire mapping reads. A protocol, so that `api` needs nothing of the
    front."""

    @property
    def background_replacement(self) -> bool | None: ...
    @property
    def model_version(self) -> str | None: ...
    @property
    def edition(self) -> str | None: ...
    @property
    def services(self) -> tuple[str, ...]: ...
    @property
    def human_only(self) -> bool | None: ...
    @property
    def voice_tag(self) -> str | None: ...
    @property
    def voice_sex(self) -> str | None: ...
    @property
    def voice_language(self) -> str | None: ...


def create_fields(options: ModelOptions) -> dict[str, Any]:
    """The create request's fields for these options (only those given)."""
    fields = update_fields(options)
    if options.model_version is not None:
        fields["model_version"] = options.model_version
    if options.edition is not None:
        fields["is_flexus"] = options.edition == "flexus"
        fields["is_fast_flexus"] = options.edition == "fast-flexus"
    return fields


def update_fields(options: ModelOptions) -> dict[str, Any]:
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
