"""The files of this run on this machine: each with its kind, identity and part plan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from uploader._files import FileKind
from uploader._journal import FileIdentity
from uploader.transfer.plan import PartPlan, Piece

__all__ = ["LocalFile"]


@dataclass(frozen=True)
class LocalFile:
    """One file to upload: a multipart file is cut by `plan`, a single file is one piece."""

    kind: FileKind
    path: Path
    identity: FileIdentity
    plan: PartPlan

    @property
    def size(self) -> int:
        return self.plan.file_size

    @property
    def pieces(self) -> list[Piece]:
        kind = self.kind
        if not kind.multipart:
            return [Piece(kind.name, 1, self.path, 0, self.size, kind.content_type,
                          f"the {kind.title}")]
        return [Piece(kind.name, part.number, self.path, part.offset, part.size,
                      kind.content_type, f"part {part.number} of the {kind.title}")
                for part in self.plan.parts]
