"""The files of this run on this machine: each with its kind, identity and part plan, and
what its metadata said when the run first looked at it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from uploader._errors import FileChangedError, LocalFileError
from uploader._files import FileKind
from uploader._journal import FileIdentity
from uploader.transfer.plan import PartPlan, Piece

__all__ = ["LocalFile", "Seen", "refuse_changed"]


@dataclass(frozen=True)
class Seen:
    """A file's metadata at one moment: any write, truncation or replacement changes one of
    these (a write in place sets the change time even where the modification time is set
    back)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: Path) -> Seen:
        """The metadata of the file at `path` now; LocalFileError if it cannot be read."""
        try:
            info = os.stat(path)
        except OSError as exc:
            raise LocalFileError(f"cannot read {path}: {exc.strerror or exc}",
                                 path=str(path)) from exc
        return cls(info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino,
                   info.st_dev)

    def differences(self, now: Seen) -> list[str]:
        """What differs in `now`, in words ("size 10 -> 12 bytes", "modification time")."""
        found = [f"size {self.size} -> {now.size} bytes"] if now.size != self.size else []
        for field, words in (("mtime_ns", "modification time"), ("ctime_ns", "change time")):
            if getattr(now, field) != getattr(self, field):
                found.append(words)
        if (now.inode, now.device) != (self.inode, self.device):
            found.append("inode (the file was replaced)")
        return found


@dataclass(frozen=True)
class LocalFile:
    """One file to upload: a multipart file is cut by `plan`, a single file is one piece;
    `seen` is its metadata before this run read any of it."""

    kind: FileKind
    path: Path
    identity: FileIdentity
    plan: PartPlan
    seen: Seen

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


def refuse_changed(files: list[LocalFile], *, job_id: str) -> None:
    """FileChangedError, naming the file and what changed, if any file's metadata differs
    from what it was before this run read it: what was sent may then mix two versions of
    it, and must not be confirmed."""
    for file in files:
        changed = file.seen.differences(Seen.of(file.path))
        if changed:
            raise FileChangedError(
                f"{file.path} ({file.kind.title}) changed while it was being uploaded "
                f"({', '.join(changed)}): what was sent may mix two versions of it, so "
                "nothing was confirmed; once it no longer changes, start the upload over to "
                "send it from the start", job_id=job_id)
