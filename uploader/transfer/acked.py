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

import socket
import struct
import sys
import threading
import weakref
from typing import Any

__all__ = ["AckedBytes", "bytes_acked"]

_TCP_INFO = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None
#: struct tcp_info: tcpi_bytes_acked is the __u64 at byte 120 (include/uapi/linux/tcp.h).
_BYTES_ACKED = struct.Struct("=Q")
_OFFSET = 120
_INFO_SIZE = 256


def bytes_acked(sock: socket.socket) -> int | None:
    """Bytes the peer acknowledged on `sock` (one more than sent, for the SYN), or None
    where the kernel does not say (or the socket is closed)."""
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _INFO_SIZE)
    except OSError:
        return None
    if len(info) < _OFFSET + _BYTES_ACKED.size:
        return None  # a kernel older than 4.1
    return int(_BYTES_ACKED.unpack_from(info, _OFFSET)[0])


class AckedBytes:
    """The bytes acknowledged on every socket this meter made, counted as they come."""

    def __init__(self) -> None:
        self._seen: weakref.WeakKeyDictionary[socket.socket, int] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.available = _TCP_INFO is not None and _probe()

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
                self._seen[sock] = 1  # the SYN's acknowledgement is not data
        return sock

    def take(self) -> int:
        """Bytes acknowledged on our sockets since the last call."""
        total = 0
        with self._lock:
            for sock, before in list(self._seen.items()):
                now = bytes_acked(sock)
                if now is None:
                    del self._seen[sock]  # closed: its last window is lost
                    continue
                if now > before:
                    total += now - before
                    self._seen[sock] = now
        return total


def _probe() -> bool:
    """Whether this kernel fills tcpi_bytes_acked (a socket not yet connected says)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return bytes_acked(probe) is not None
