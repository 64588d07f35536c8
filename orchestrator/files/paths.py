"""Guest paths as the API shows them, and what they map to in the appliance.

Scheme: a backup disk's root lists its file systems by name — a partition
``sda1``, a whole-disk file system ``sda``, a logical volume ``vg0/root``
(volume group, then volume). ``/vg0`` is a virtual folder of ``vg0``'s
volumes. Below a file system the path is the guest's own: ``/sda1/etc/hostname``.

Paths are hostile input: absolute, UTF-8, no NUL, no ``.`` or ``..``
components, at most 4096 bytes and 255 bytes per component. Repeated
slashes are folded. Each file system is mounted read-only at an appliance
directory of our choosing (``/fs0``, ``/fs1``…), never at a name from the
guest, and symbolic links are never followed (``GuestFs.check_no_links``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import Invalid, NotFound

MAX_PATH = 4096
MAX_NAME = 255


def split(path: str) -> list[str]:
    """The components of an API path, validated."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise Invalid("path must be an absolute path starting with /")
    if "\x00" in path:
        raise Invalid("path must not contain NUL")
    try:
        raw = path.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid("path must be valid UTF-8") from None
    if len(raw) > MAX_PATH:
        raise Invalid(f"path is longer than {MAX_PATH} bytes")
    parts = [p for p in path.split("/") if p]
    for p in parts:
        if p in (".", ".."):
            raise Invalid("path must not contain '.' or '..' components")
        if len(p.encode("utf-8")) > MAX_NAME:
            raise Invalid(f"a path component is longer than {MAX_NAME} bytes")
    return parts


def fs_name(device: str) -> str:
    """``/dev/sda1`` → ``sda1``; ``/dev/vg0/root`` → ``vg0/root``;
    ``/dev/mapper/vg0-root`` → ``vg0-root``."""
    name = device.removeprefix("/dev/").removeprefix("mapper/")
    return name


@dataclass(frozen=True)
class Resolved:
    fs: str | None  # the file system's API name; None: a virtual folder (the root, a volume group)
    mount: str | None  # its appliance mount point
    inner: str  # the path inside the file system, "/" for its root
    virtual: tuple[str, ...] = ()  # a virtual folder's components

    @property
    def appliance(self) -> str:
        assert self.mount is not None
        return self.mount if self.inner == "/" else self.mount + self.inner


def resolve(path: str, mounts: dict[str, str]) -> Resolved:
    """Map an API path onto ``mounts`` (file-system name → appliance mount
    point): the longest file-system name that is a prefix of the path wins."""
    parts = split(path)
    for n in range(len(parts), 0, -1):
        name = "/".join(parts[:n])
        if name in mounts:
            return Resolved(name, mounts[name], "/" + "/".join(parts[n:]))
    prefix = tuple(parts)
    if any(tuple(name.split("/"))[:len(prefix)] == prefix and len(name.split("/")) > len(prefix)
           for name in mounts) or not prefix:
        return Resolved(None, None, "/", prefix)
    raise NotFound("file system", "/" + "/".join(parts[:1]))


def virtual_children(prefix: tuple[str, ...], mounts: dict[str, str]) -> dict[str, bool]:
    """The names just below a virtual folder: name → whether it is a file system itself."""
    out: dict[str, bool] = {}
    for name in mounts:
        parts = tuple(name.split("/"))
        if parts[:len(prefix)] == prefix and len(parts) > len(prefix):
            child = parts[len(prefix)]
            out[child] = out.get(child, False) or len(parts) == len(prefix) + 1
    return out


def join(api_dir: str, name: str) -> str:
    return api_dir.rstrip("/") + "/" + name
