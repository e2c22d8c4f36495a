"""Which processes listen on which TCP ports, tracked cheaply.

Every tick asks the kernel for the listening TCP sockets through netlink
sock_diag (socket inode -> port; only this network namespace), falling back to
the LISTEN rows of ``/proc/net/tcp{,6}`` where netlink is not allowed. Mapping an
inode to its process means reading ``/proc/<pid>/fd`` links, which is costly, so
it is done only for inodes not mapped yet, only when the set of listening
sockets changed (or an owner died), and only over candidate processes, newest
first, stopping as soon as every new inode is found.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from collections.abc import Callable, Iterable, Iterator

LISTEN = "0A"
_SOCKET_PREFIX = "socket:["
RETRY_UNRESOLVED = 30
"""Updates between two looks for the owners of listening sockets not found before."""

logger = logging.getLogger(__name__)

Key = tuple[bytes, bytes]
"""A process identity: (pid, start time in clock ticks since boot), as /proc spells them."""


_SOCK_DIAG_BY_FAMILY = 20
_NETLINK_SOCK_DIAG = 4
_NLM_F_DUMP_REQUEST = 0x301
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10
_HEADER = struct.Struct("=IHHII")


def read_listening_netlink() -> dict[int, int]:
    """Listening TCP sockets via netlink sock_diag (the kernel filters LISTEN): inode -> port.

    Reading ``/proc/net/tcp`` makes the kernel walk every bucket of the connection
    hash table, which costs milliseconds even with few sockets; asking sock_diag
    for LISTEN sockets only walks the listening table (tens of microseconds).
    """
    found: dict[int, int] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(2.0)
        for family in (socket.AF_INET, socket.AF_INET6):
            # inet_diag_req_v2: family, protocol, ext, pad, states; then a zeroed sockid.
            request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN) + bytes(48)
            sock.sendto(_HEADER.pack(16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_DUMP_REQUEST, 1, 0) + request, (0, 0))
            done = False
            while not done:
                data = sock.recv(1 << 16)
                offset = 0
                while offset + 16 <= len(data):
                    length, kind = _HEADER.unpack_from(data, offset)[:2]
                    if kind == _NLMSG_DONE:
                        done = True
                        break
                    if kind == _NLMSG_ERROR or length < 16:
                        raise OSError("sock_diag refused the request")
                    body = offset + 16  # inet_diag_msg: sport at +4 (big endian), inode at +68
                    inode = int.from_bytes(data[body + 68 : body + 72], sys.byteorder)
                    if inode:
                        found[inode] = int.from_bytes(data[body + 4 : body + 6], "big")
                    offset += (length + 3) & ~3
                if not data:
                    break
    return found


def listen_rows(proc: str = "/proc") -> Iterator[tuple[bytes, int, int]]:
    """The LISTEN rows of ``/proc/net/tcp{,6}`` (this namespace): (local address in hex, port, inode)."""
    for name in ("tcp", "tcp6"):
        try:
            with open(f"{proc}/net/{name}", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        for line in data.split(b"\n")[1:]:
            fields = line.split()
            if len(fields) < 10 or fields[3] != b"0A":
                continue
            local, _, port_hex = fields[1].rpartition(b":")
            try:
                yield local, int(port_hex, 16), int(fields[9])
            except ValueError:
                continue


def read_listening_proc(proc: str = "/proc") -> dict[int, int]:
    """Listening TCP sockets from ``/proc/net/tcp{,6}`` LISTEN rows: inode -> port."""
    return {inode: port for _, port, inode in listen_rows(proc) if inode}


def socket_inodes(pid: bytes, proc: str = "/proc") -> set[int] | None:
    """Inodes of the sockets a process holds; ``None`` when its fds cannot be read."""
    base = f"{proc}/{pid.decode()}/fd"
    try:
        names = os.listdir(base)
    except (PermissionError, FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    except OSError:
        return None
    inodes: set[int] = set()
    for name in names:
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target.startswith(_SOCKET_PREFIX):
            inodes.add(int(target[8:-1]))
    return inodes


class ListeningTracker:
    """Keeps ``inode -> owner`` for listening sockets and answers ports per process."""

    def __init__(self, proc: str = "/proc") -> None:
        """Start with nothing known."""
        self.proc = proc
        self.ports: dict[int, int] = {}
        """inode -> port of every listening socket seen at the last update."""
        self.owner: dict[int, Key] = {}
        """inode -> the process found holding it."""
        self.unreadable: set[Key] = set()
        """Processes whose fd table could not be read (ports unknown)."""
        self.scans = 0
        """How many fd tables were read (for measuring)."""
        self._unresolved: frozenset[int] = frozenset()
        self._updates = 0
        self._netlink = True

    def read(self) -> dict[int, int]:
        """The listening sockets now: netlink when it works, else /proc/net."""
        if self._netlink and self.proc == "/proc":
            try:
                return read_listening_netlink()
            except OSError as exc:
                self._netlink = False
                logger.info("sock_diag unavailable (%s); reading /proc/net/tcp instead", exc)
        return read_listening_proc(self.proc)

    def update(self, alive: Callable[[bytes], Key | None], candidates: Callable[[], Iterable[Key]]) -> None:
        """Refresh the listening set; map new inodes to owners among ``candidates``.

        Args:
            alive: pid -> key of that pid now (None if gone or not a candidate).
            candidates: Returns the processes that may own sockets we care about,
                newest first (a new socket usually belongs to a new process);
                called only when some inode needs an owner.
        """
        self.ports = self.read()
        for inode in [inode for inode in self.owner if inode not in self.ports]:
            del self.owner[inode]
        wanted = {
            inode
            for inode in self.ports
            if (owner := self.owner.get(inode)) is None or alive(owner[0]) != owner
        }
        for inode in wanted:
            self.owner.pop(inode, None)
        # Inodes we already failed to map (a daemon's: not a candidate) are looked for again only
        # every RETRY_UNRESOLVED updates; a new inode is looked for until it is found.
        self._updates += 1
        retry = self._updates % RETRY_UNRESOLVED == 0
        looking = set(wanted) if retry else wanted - self._unresolved
        if not looking:
            self._unresolved = frozenset(wanted)
            return
        for key in candidates():
            inodes = socket_inodes(key[0], self.proc)
            self.scans += 1
            if inodes is None:
                self.unreadable.add(key)
                continue
            self.unreadable.discard(key)
            for inode in inodes & wanted:
                self.owner[inode] = key
                wanted.discard(inode)
                looking.discard(inode)
            if not looking:
                break
        self._unresolved = frozenset(wanted)
        if len(self.unreadable) > 4096:
            self.unreadable = {key for key in self.unreadable if alive(key[0]) == key}

    def ports_by_key(self) -> dict[Key, list[int]]:
        """key -> sorted listening ports of that process."""
        result: dict[Key, list[int]] = {}
        for inode, key in self.owner.items():
            port = self.ports.get(inode)
            if port is not None:
                result.setdefault(key, []).append(port)
        for ports in result.values():
            ports.sort()
        return result


class NamespaceListening:
    """Listening TCP ports of processes in other network namespaces (containers, ``unshare --net``).

    A host-wide scan (sock_diag, ``/proc/net/tcp``) sees only the dashboard's own
    namespace. For each other namespace, its LISTEN rows are read through one of
    its processes (``/proc/<pid>/net/tcp{,6}``) and matched to the socket inodes
    its processes hold; fd tables are read again only when that set changed.
    """

    def __init__(self, proc: str = "/proc") -> None:
        """Start with nothing known."""
        self.proc = proc
        self._ports: dict[str, dict[int, int]] = {}
        """namespace -> (inode -> port) at the last update."""
        self._owner: dict[str, dict[int, Key]] = {}
        """namespace -> (inode -> the process found holding it)."""
        self._members: dict[str, frozenset[Key]] = {}
        self.unreadable: set[Key] = set()
        """Processes in another namespace whose fd table could not be read (ports unknown)."""
        self.scans = 0

    def update(self, members: dict[str, list[Key]]) -> dict[Key, list[int]]:
        """Refresh every namespace in ``members`` (namespace -> its processes); key -> sorted ports."""
        result: dict[Key, list[int]] = {}
        for namespace in [ns for ns in self._ports if ns not in members]:
            del self._ports[namespace]
            self._owner.pop(namespace, None)
            self._members.pop(namespace, None)
        if self.unreadable:
            everyone = {key for keys in members.values() for key in keys}
            self.unreadable &= everyone
        for namespace, keys in members.items():
            ports: dict[int, int] = {}
            for key in keys:  # any member shows the namespace's table; the first that can be read
                base = f"{self.proc}/{key[0].decode()}"
                if os.path.exists(f"{base}/net/tcp"):
                    ports = read_listening_proc(base)
                    break
            previous = self._ports.get(namespace)
            member_set = frozenset(keys)
            owners = self._owner.get(namespace, {})
            lost_owner = any(owner not in member_set for owner in owners.values())
            if previous is None or set(previous) != set(ports) or lost_owner or (
                len(owners) < len(ports) and member_set != self._members.get(namespace)
            ):
                owners = self._map(ports, keys)
            self._ports[namespace] = ports
            self._owner[namespace] = owners
            self._members[namespace] = member_set
            for inode, key in owners.items():
                port = ports.get(inode)
                if port is not None:
                    result.setdefault(key, []).append(port)
        for found in result.values():
            found.sort()
        return result

    def _map(self, ports: dict[int, int], keys: list[Key]) -> dict[int, Key]:
        """inode -> owner for the namespace's listening inodes, reading fd tables newest first."""
        owners: dict[int, Key] = {}
        wanted = set(ports)
        if not wanted:
            return owners
        for key in sorted(keys, key=lambda k: int(k[1]), reverse=True):
            inodes = socket_inodes(key[0], self.proc)
            self.scans += 1
            if inodes is None:
                self.unreadable.add(key)
                continue
            self.unreadable.discard(key)
            for inode in inodes & wanted:
                owners[inode] = key
                wanted.discard(inode)
            if not wanted:
                break
        return owners
