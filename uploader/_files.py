"""The files of a training job, one row each: a new kind of file is one new row.

The table is the one source of the job's files everywhere: `Job`'s `files` and the keywords
of `upload_video`, the CLI's flags and their help, the manifest's columns and the journal's
names all come from `KINDS` (read when they are needed, not copied at import). Each row
says where the file's upload link comes in the create/update answer, which Content-Type
that link was signed for, whether the file goes up in parts (and then which count field and
commands belong to it), which preflight rule it must pass, which command confirms it,
whether the review needs it, and where show job tells that it is stored (API.md §4b).
Pure data: the preflight, the engine and the workflow all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KINDS", "TRAINING_VIDEO", "FileKind", "kind", "other_kinds"]

OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True, kw_only=True)
class FileKind:
    """One kind of file a job can hold."""

    name: str  #: the key in `Job.files`, the manifest column, the journal's name
    title: str  #: how messages name it
    description: str = ""  #: what the file is, in a sentence
    link_field: str  #: the create/update answer's field with its link (or part links)
    download_field: str  #: show job's field that is set once the file is stored
    rule: str  #: the preflight rule: "video", "image", "letter" or "audio"
    content_type: str = OCTET_STREAM  #: what its link was signed for
    count_field: str | None = None  #: multipart only: the part count's field
    list_command: str | None = None  #: multipart only: lists the stored parts
    confirm_command: str | None = None  #: sent once the file is stored
    required: bool = False  #: the review refuses a job without it
    deleted_by_review: bool = False  #: gone after the review: a resubmission sends it again
    create_fields: tuple[tuple[str, str], ...] = ()  #: create/update fields it needs

    @property
    def multipart(self) -> bool:
        return self.count_field is not None


TRAINING_VIDEO = FileKind(
    name="training_video", title="training video", link_field="training_video_upload_url",
    download_field="training_video_download_url", rule="video",
    count_field="video_multipart_count", list_command="GET_MULTIPART_UPLOADED",
    confirm_command="CONFIRM_MULTIPART_UPLOADED", required=True,
)

KINDS: tuple[FileKind, ...] = (
    TRAINING_VIDEO,
    FileKind(name="action_video", title="action video", link_field="action_video_upload_url",
             download_field="action_video_download_url", rule="video",
             count_field="action_video_multipart_count",
             list_command="GET_ACTION_VIDEO_MULTIPART_UPLOADED",
             confirm_command="CONFIRM_ACTION_VIDEO_MULTIPART_UPLOADED",
             description="The action (choreography) video: an mp4 by the training video's rules."),
    FileKind(name="id_card_front", title="ID card image (portrait side)",
             link_field="id_card_image1_upload_url",
             download_field="id_card_image1_download_url", rule="image", required=True,
             deleted_by_review=True,
             description="The ID card's portrait side (JPEG or PNG); required to submit."),
    FileKind(name="id_card_back", title="ID card image (national-emblem side)",
             link_field="id_card_image2_upload_url",
             download_field="id_card_image2_download_url", rule="image", required=True,
             deleted_by_review=True,
             description="The ID card's national-emblem side (JPEG or PNG); required to submit."),
    FileKind(name="grant_file", title="authorization letter", link_field="grant_file_upload_url",
             download_field="grant_file_download_url", rule="letter",
             confirm_command="CONFIRM_AUTHORIZATION_LETTER", required=True,
             description="The signed authorization letter (PDF, JPEG or PNG); required to submit."),
    FileKind(name="cover", title="cover image", link_field="cover_upload_url",
             download_field="cover_download_url", rule="image",
             description="The model's cover image (JPEG or PNG)."),
    FileKind(name="audio", title="voice recordings (zip)", link_field="audio_upload_url",
             download_field="audio_file_download_url", rule="audio",
             content_type="application/zip", create_fields=(("audio_source_type", "AUDIO"),),
             description="A zip of voice recordings (WAV or MP3)."),
)


def kind(name: str) -> FileKind:
    """The row of the file kind called `name` (KeyError if there is none)."""
    for row in KINDS:
        if row.name == name:
            return row
    raise KeyError(name)


def other_kinds() -> tuple[FileKind, ...]:
    """Every kind but the training video: the files a job takes besides its video."""
    return tuple(k for k in KINDS if k is not TRAINING_VIDEO)
