"""Which processes exist on this host: names that identify a process across
containers, and whether a process is still alive."""

from __future__ import annotations

import os
import socket
import zlib


def _host_identity() -> str:
    """Host name plus pid namespace: two containers may share a host name, but a pid
    is only meaningful inside its own namespace."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{namespace}"


HOST = _host_identity()
# HOST in a form that fits a file name
_HOST_TAG = f"{zlib.crc32(HOST.encode()):08x}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_tag() -> str:
    """This process, for file names: ``<host hash>.<pid>``."""
    return f"{_HOST_TAG}.{os.getpid()}"


def tag_is_dead(tag: str) -> bool:
    """Whether ``tag`` (from :func:`owner_tag`) names a process of this host that no
    longer exists. Tags of other hosts, or that do not parse, are never dead here."""
    host, _, pid = tag.partition(".")
    if host != _HOST_TAG or not pid.isdigit():
        return False
    return int(pid) != os.getpid() and not alive(int(pid))
