"""What the network took: bytes the other end acknowledged, read from the kernel.

Bytes handed to a socket are not bytes sent: the socket's buffer takes megabytes at once
(several on loopback, seconds of a thin link), so a tuner that counts what it wrote sees
throughput the link does not have while buffers fill, and none while they drain. Linux
counts, per TCP connection, the bytes the peer acknowledged (`TCP_INFO`'s
`tcpi_bytes_acked`, since 4.1): what the network carried, whatever sits in buffers.

`AckedBytes` makes the sockets of a session (aiohttp's public `socket_factory`), keeps a
weak reference to each, and `take()` answers the bytes acknowledged on all of them since it
was last asked. Where the kernel has no such count (macOS, Windows, an older Linux),
`available` is False and callers count bytes handed, as before. A connection that closes
between two reads loses what it acknowledged in between (at most one window's worth).
"""

from __future__ import annotations

import math
import socket
import statistics
import struct
import sys
import threading
import time
import weakref
from typing import Any

__all__ = ["AckedBytes"]

_TCP_INFO = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None
#: struct tcp_info: tcpi_bytes_acked is the __u64 at byte 120 (include/uapi/linux/tcp.h).
_BYTES_ACKED = struct.Struct("=Q")
_OFFSET = 120
#: tcpi_rtt, the smoothed round trip in microseconds, is the __u32 at byte 68.
_RTT = struct.Struct("=I")
_RTT_OFFSET = 68
_INFO_SIZE = 256
#: Seconds within which a connection's count must have grown for it to count as carrying.
RECENT = 0.2


def _tcp_info(sock: socket.socket) -> tuple[int, float] | None:
    """(bytes the peer acknowledged, smoothed round trip in seconds) of `sock`, or None
    where the kernel does not say (or the socket is closed). The count is one more than
    the bytes sent, for the SYN."""
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _INFO_SIZE)
    except OSError:
        return None
    if len(info) < _OFFSET + _BYTES_ACKED.size:
        return None  # a kernel older than 4.1
    return (int(_BYTES_ACKED.unpack_from(info, _OFFSET)[0]),
            _RTT.unpack_from(info, _RTT_OFFSET)[0] / 1e6)


class AckedBytes:
    """The bytes acknowledged on every socket this meter made, counted as they come."""

    def __init__(self) -> None:
        #: By socket: bytes acknowledged when last read, and when that count last grew.
        self._seen: weakref.WeakKeyDictionary[socket.socket, tuple[int, float]] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()
        self.available = _TCP_INFO is not None and _probe()
        #: At the last `take()`: how many connections carried data (had more acknowledged)
        #: in the RECENT seconds before it (a gap between two reads of the body does not
        #: count; a connection that has not begun does), and the median smoothed round
        #: trip (seconds) of those that carried since the `take()` before (None until one
        #: has).
        self.carrying = 0
        self.round_trip: float | None = None

    @property
    def active(self) -> bool:
        """Whether it measures: the kernel counts, and a socket of ours is open."""
        return self.available and len(self._seen) > 0

    def socket_factory(self, addr_info: Any) -> socket.socket:
        """For `aiohttp.TCPConnector(socket_factory=...)`: the socket aiohttp would make
        (family, type and protocol of the address), kept in view."""
        family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
        sock = socket.socket(family, kind, proto)
        if self.available:
            with self._lock:
                self._seen[sock] = (1, -math.inf)  # the SYN's acknowledgement: not data
        return sock

    def take(self) -> int:
        """Bytes acknowledged on our sockets since the last call."""
        total = carrying = 0
        trips: list[float] = []
        at = time.monotonic()
        with self._lock:
            for sock, (before, grew) in list(self._seen.items()):
                info = _tcp_info(sock)
                if info is None:
                    del self._seen[sock]  # closed: its last window is lost
                    continue
                now, trip = info
                if now > before:
                    total += now - before
                    self._seen[sock] = (now, grew := at)
                    trips.append(trip)
                carrying += grew >= at - RECENT
        self.carrying = carrying
        if trips:
            self.round_trip = statistics.median(trips)
        return total


def _probe() -> bool:
    """Whether this kernel fills tcpi_bytes_acked (a socket not yet connected says)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return _tcp_info(probe) is not None
