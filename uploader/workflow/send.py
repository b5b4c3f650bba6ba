"""Sending: what the server lacks of each file, sent through the one transfer engine.

A multipart file's stored parts come from its list command and are checked against the
journal's MD5s, or hashed from the file where the journal has none; a single file is stored
when show job has its download link, and it is ours when that object's ETag is the file's
MD5. Whatever is missing goes out in one `send_pieces` call, video parts and single files
alike; then the server is asked again (unless every piece was proved by its ETag and no
update came between), up to MAX_ROUNDS times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import aiohttp

from uploader._errors import FileChangedError, TransferError
from uploader._files import kind
from uploader._journal import Journal
from uploader._log import logger
from uploader._progress import Progress
from uploader.api.models import JobDetail
from uploader.api.states import REVIEW_FAILED
from uploader.transfer.budget import TransferBudget
from uploader.transfer.engine import Sent, TransferConfig, send_pieces
from uploader.transfer.plan import PartPlan, Piece, at_risk, plans_of_count
from uploader.transfer.reading import etag_matches, multipart_etag, pieces_md5
from uploader.workflow.links import Links
from uploader.workflow.local import LocalFile
from uploader.workflow.verify import sampled_match

__all__ = ["MAX_ROUNDS", "NOT_MD5_STEP", "Sender", "Verdict", "confirm_step", "judge_stored"]

log = logger()

#: Stored pieces hashed at once to check them (as many as the MD5 lanes take together).
HASHED_AT_ONCE = 8

#: After this many rounds of "send what is missing, then ask the server", give up.
MAX_ROUNDS = 3
#: The journal's step once the storage answered an ETag that is not an MD5.
NOT_MD5_STEP = "storage:etags-not-md5"
#: An object assembled from parts, as its ETag says where ETags are MD5s: `md5-count`.
_ASSEMBLED_ETAG = re.compile(r"^[0-9a-f]{32}-\d+$")


def confirm_step(kind: str) -> str:
    """The journal's name for "the confirm of this file's upload is done"."""
    return f"confirm:{kind}"


@dataclass
class Tally:
    """What was sent, by file kind."""

    sent_pieces: dict[str, int] = field(default_factory=dict)
    sent_bytes: dict[str, int] = field(default_factory=dict)
    skipped_pieces: dict[str, int] = field(default_factory=dict)
    wire_bytes: int = 0
    unverified: set[str] = field(default_factory=set)  #: kinds with a piece no ETag proved


class Sender:
    """Sends the files' missing pieces and keeps the tally and the progress."""

    def __init__(self, *, files: list[LocalFile], links: Links, journal: Journal,
                 session: aiohttp.ClientSession, config: TransferConfig, pieces: int,
                 progress: Progress, new_job: bool = False,
                 budget: TransferBudget | None = None) -> None:
        self.files, self.links, self.journal = files, links, journal
        self.new_job = new_job  # created by this run: it holds nothing of an earlier one
        self._untouched = new_job  # ... and nothing was sent to it yet
        self._said_not_md5 = False
        self.budget = budget
        self.session, self.config, self.progress = session, config, progress
        self.pieces = pieces  # the most pieces this upload sends at once
        self.total = sum(f.size for f in files)
        self.done_bytes = 0
        self.tally = Tally()
        self._sent: dict[tuple[str, int], str] = {}  # pieces this run sent, with their MD5
        self._verified: set[tuple[str, int]] = set()  # ... and those their ETag proved

    async def send_missing(self, *, restart: bool) -> None:
        missing = await self._missing(trust_server=not restart)
        for file in self.files:
            ours = [p for p in missing if p.kind == file.kind.name]
            self.tally.skipped_pieces[file.kind.name] = len(file.pieces) - len(ours)
        stored = self.total - sum(p.size for p in missing)
        if stored:  # an earlier run's: done at once, not sent
            self.done_bytes += stored
            self.progress.on_stored(stored)
        for _ in range(MAX_ROUNDS):
            # Counted from what the server lacks: pieces it lost since count as not done.
            self._advance(self.total - sum(p.size for p in missing) - self.done_bytes)
            if not missing:
                return
            generation = self.links.generation
            self.tally.wire_bytes += await send_pieces(
                missing, session=self.session, urls=self.links, config=self.config,
                concurrency=self.pieces, on_bytes=self._advance, on_done=self._piece_done,
                job_id=self.links.job_id, budget=self.budget, most_at_risk=self._most_at_risk)
            if generation == self.links.generation and all(
                    p.key in self._verified for p in missing):
                # Every piece was taken with its MD5 as ETag, and no update (which may drop
                # stored parts) came between: the server is not asked again.
                return
            missing = await self._missing(trust_server=True)
        if missing:
            raise TransferError(f"the server still lacks {len(missing)} piece(s) after "
                                f"{MAX_ROUNDS} rounds", job_id=self.links.job_id)

    @property
    def _most_at_risk(self) -> int | None:
        """With tuned concurrency, the pieces in flight hold at most `at_risk` bytes of the
        video, whatever its plan (the default plan's parts are small enough for the most
        pieces auto flies): an interruption costs little. A fixed concurrency is the
        caller's choice, kept as given."""
        if self.budget is None or not self.budget.auto:
            return None
        return at_risk(self.files[0].size)

    async def _missing(self, *, trust_server: bool) -> list[Piece]:
        """The pieces to send: all on a restart's first round, else those the server lacks.
        Every piece the server holds from an earlier run is hashed from the file as it is
        now: the journal's MD5s say what was sent, not what the file holds today."""
        pending = [f for f in self.files
                   if confirm_step(f.kind.name) not in self.journal.steps or not trust_server]
        if not trust_server or self._untouched:
            # A restart sends everything; a job this run created holds nothing yet (no call
            # need ask it: one list command less per new job).
            self._untouched = False
            return [piece for f in pending for piece in f.pieces]
        stored = await self._stored(pending)
        pieces = [piece for f in pending for piece in f.pieces]
        await self._forget_lost(pieces, stored)
        local = await self._local_md5s(pieces, stored)
        verdict = judge_stored(pieces, stored=stored, journal=self.journal.parts, local=local,
                               job_id=self.links.job_id, etags_are_md5=self.etags_are_md5)
        for key, md5 in verdict.learned.items():
            await self.journal.record_part(key, md5)
        self.tally.unverified.update(kind for kind, _ in verdict.unproved)
        return verdict.missing

    async def _local_md5s(self, pieces: list[Piece], stored: dict[tuple[str, int], str]
                          ) -> dict[tuple[str, int], str]:
        """The MD5 of every stored piece in the file now. Pieces this run sent were hashed
        as they went out and checked against their ETag: only those an earlier run sent are
        hashed again."""
        local = await pieces_md5(
            [p for p in pieces if p.key in stored and p.key not in self._sent],
            chunk_size=self.config.chunk_size, concurrency=min(HASHED_AT_ONCE, self.pieces))
        return local | {key: md5 for key, md5 in self._sent.items() if key in stored}

    @property
    def etags_are_md5(self) -> bool:
        """False once the storage answered ETags that are not MD5s (an encrypted bucket),
        in this run or an earlier one (the journal remembers)."""
        return NOT_MD5_STEP not in self.journal.steps

    async def _unverifiable(self, piece: Piece) -> None:
        """A piece whose ETag is not its MD5: said once, remembered for a resume."""
        self.tally.unverified.add(piece.kind)
        if self.etags_are_md5 and not self._said_not_md5:
            self._said_not_md5 = True  # before the journal's write: pieces end together
            log.warning("the storage's ETags are not MD5s (server-side encryption): they "
                        "cannot verify the bytes sent (%s first); what was sent is trusted as "
                        "the journal recorded it", piece.label)
            await self.journal.record_step(NOT_MD5_STEP)

    async def _stored(self, pending: list[LocalFile]) -> dict[tuple[str, int], str]:
        """The ETag of every piece of `pending` the server holds; a multipart file the job
        holds confirmed already is taken out of `pending`."""
        stored: dict[tuple[str, int], str] = {}
        detail: JobDetail | None = None
        for file in list(pending):
            # A job this run created holds no confirmed file: show job need not be asked.
            if detail is None and (not file.kind.multipart or not self.new_job):
                detail = await self.links.job_detail()
            if file.kind.multipart:
                found = await self.links.stored_parts(file.kind)
                if not found and detail is not None and await self.confirmed_before(
                        file, detail):
                    pending.remove(file)
                stored.update({(file.kind.name, n): etag for n, etag in found.items()})
            else:
                assert detail is not None
                etag = await self._single_etag(file, detail)
                if etag is not None:
                    stored[(file.kind.name, 1)] = etag
        return stored

    async def _single_etag(self, file: LocalFile, detail: JobDetail) -> str | None:
        """The stored single file's ETag. One the journal says was stored may not be at its
        download link yet (the service moves it from its `_tmp` key): waited for rather than
        sent again."""
        moving = (file.kind.name, 1) in self.journal.parts and detail.state not in REVIEW_FAILED
        link = await self.links.download_link(file.kind, detail=detail, wait=moving)
        return await self.links.file_etag(link)

    async def resend(self, file: LocalFile) -> None:
        """Send a single file again, on fresh links (its stored copy differs from it)."""
        await self.links.refresh(self.links.generation)
        self.tally.wire_bytes += await send_pieces(
            file.pieces, session=self.session, urls=self.links, config=self.config,
            concurrency=self.pieces, on_bytes=lambda delta: None, on_done=self._piece_done,
            job_id=self.links.job_id, budget=self.budget)

    async def confirmed_before(self, file: LocalFile, detail: JobDetail) -> bool:
        """Whether the job holds this very file, confirmed (by an earlier run whose confirm
        answer was lost, or that stopped before it could record it, or by another machine's
        run on the same job): the stored object's ETag is the multipart ETag of the file's
        parts as they are now, under this run's plan or another of its part count."""
        if detail.state in REVIEW_FAILED:
            return False  # the review deleted it, whatever show job still says
        link = detail.raw.get(file.kind.download_field)
        etag = await self.links.file_etag(link)
        if etag is None or not isinstance(link, str):
            return False
        held = etag.strip().strip('"').lower()
        plan = await self._plan_of(file, held) if self.etags_are_md5 else None
        if plan is None:
            # No plan's MD5s give the ETag: another file, or an encrypted bucket whose ETags
            # prove nothing (their form is the same). Ranged reads of the object say which,
            # never resending it to find out.
            if not _ASSEMBLED_ETAG.match(held) and self.etags_are_md5:
                return False
            if not await sampled_match(file, link, session=self.session):
                return False
            log.info("job %s holds this %s, confirmed already (recognised by ranged reads: "
                     "its ETag is not its parts' MD5s): nothing to send", self.links.job_id,
                     file.kind.title)
            await self.journal.record_step(confirm_step(file.kind.name))
            self.tally.skipped_pieces[file.kind.name] = len(file.pieces)
            self.tally.unverified.add(file.kind.name)
            return True
        another = "" if plan.sizes == file.plan.sizes else f" (sent in {plan.count} parts)"
        log.info("job %s holds this %s, confirmed already%s: nothing to send",
                 self.links.job_id, file.kind.title, another)
        await self.journal.record_step(confirm_step(file.kind.name))
        self.tally.skipped_pieces[file.kind.name] = len(file.pieces)
        return True

    async def _plan_of(self, file: LocalFile, etag: str) -> PartPlan | None:
        """The plan under which the file's parts make the assembled ETag `etag`, if any."""
        for plan in _plans_to_try(file, etag):
            pieces = replace(file, plan=plan).pieces
            md5s = await pieces_md5(pieces, chunk_size=self.config.chunk_size,
                                    concurrency=min(HASHED_AT_ONCE, self.pieces))
            if multipart_etag([md5s[p.key] for p in pieces]) == etag:
                return plan
        return None

    async def _forget_lost(self, pieces: list[Piece], stored: dict[tuple[str, int], str]
                           ) -> None:
        lost = [p for p in pieces if p.key in self.journal.parts and p.key not in stored]
        for name in sorted({p.kind for p in lost}):
            numbers = [p.number for p in lost if p.kind == name]
            log.warning("the server no longer holds %s sent earlier; sending again",
                        _shorten([p.label for p in lost if p.kind == name]))
            await self.journal.forget_parts(name, numbers)

    async def _piece_done(self, piece: Piece, sent: Sent) -> None:
        self._sent[piece.key] = sent.md5_hex
        if sent.verified:
            self._verified.add(piece.key)
        await self.journal.record_part(piece.key, sent.md5_hex)
        if not sent.verified:
            await self._unverifiable(piece)
        self.tally.sent_pieces[piece.kind] = self.tally.sent_pieces.get(piece.kind, 0) + 1
        self.tally.sent_bytes[piece.kind] = (self.tally.sent_bytes.get(piece.kind, 0)
                                             + piece.size)

    def _advance(self, delta: int) -> None:
        self.done_bytes += delta
        if delta:
            self.progress.on_bytes(delta)


def _plans_to_try(file: LocalFile, etag: str) -> list[PartPlan]:
    """This run's plan, then those of the part count an assembled object's ETag (`MD5-N`)
    names: a video confirmed under `parts=3` is recognised by a run with the default."""
    count = etag.rpartition("-")[2]
    if not count.isdigit():
        return [file.plan]
    others = [p for p in plans_of_count(file.size, int(count)) if p.sizes != file.plan.sizes]
    return ([file.plan] if file.plan.count == int(count) else []) + others


def _shorten(labels: list[str]) -> str:
    shown = ", ".join(labels[:10])
    return shown + (f" and {len(labels) - 10} more" if len(labels) > 10 else "")


@dataclass
class Verdict:
    """What the server's stored pieces mean: those still `missing`, the MD5s `learned` of
    stored pieces the journal did not know (an earlier run's lost records), and the stored
    pieces `unproved`: taken as ours on the journal's word, no ETag proving their bytes."""

    missing: list[Piece]
    learned: dict[tuple[str, int], str]
    unproved: set[tuple[str, int]] = field(default_factory=set)


def judge_stored(pieces: list[Piece], *, stored: dict[tuple[str, int], str],
                 journal: dict[tuple[str, int], str], local: dict[tuple[str, int], str],
                 job_id: str, etags_are_md5: bool = True) -> Verdict:
    """Which of `pieces` the server lacks, from each stored piece's ETag (`stored`), the MD5
    the journal recorded when it was sent (`journal`) and its MD5 in the file now (`local`,
    for every stored piece); `etags_are_md5` False on a storage whose ETags prove nothing.
    Pure. FileChangedError when the file's bytes are not those the journal says were sent
    (a multipart file: its parts must all be one file's); a stored piece the journal does
    not know that is not the file's is simply replaced."""
    verdict = Verdict([], {})
    for piece in pieces:
        if piece.key not in stored:
            verdict.missing.append(piece)
            continue
        known, now = journal.get(piece.key), local[piece.key]
        if known is not None and known != now:
            raise FileChangedError(
                f"{piece.path} changed since {piece.label} was sent (its bytes differ, though "
                "its size and time may not): start the upload over to send it from the start",
                job_id=job_id)
        match = etag_matches(stored[piece.key], now) if etags_are_md5 else None
        if match is None:  # not an MD5: only the journal can say it is ours
            if known is None:
                verdict.missing.append(piece)
            else:
                verdict.unproved.add(piece.key)
            continue
        if not match:
            if known is not None and kind(piece.kind).multipart:
                raise FileChangedError(
                    f"{piece.label} on the server does not match {piece.path}: the file "
                    "changed since it was sent; start the upload over to send it from the "
                    "start", job_id=job_id)
            # Not this run's to vouch for (another machine's part, an earlier run's whose
            # record was lost, or an encrypted bucket's ETag, which looks like an MD5):
            # replaced by this file's, so that every part of the upload is one file's.
            verdict.missing.append(piece)
            continue
        if known is None:
            verdict.learned[piece.key] = now
    return verdict
