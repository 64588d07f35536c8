"""The target registry: which `Target` implementation serves a URL or path.

==========================  ==============================================
``nfs://server/export/dir``  `NfsTarget` (libnfs in user space, no mount)
``file:///path``, ``/path``  `PathTarget` (a local or mounted directory)
==========================  ==============================================

The backends depend only on `target` (the interface); this module sits
above them, so no backend ever imports upward.
"""

from __future__ import annotations

import os
from typing import Callable
from urllib.parse import urlsplit

from .errors import InvalidPath
from .nfs_target import NfsTarget
from .path_target import PathTarget
from .target import Target

# URL scheme -> factory(url_or_path, **options). A plain path has no scheme.
SCHEMES: dict[str, Callable[..., Target]] = {
    "nfs": NfsTarget,
    "file": lambda url, **options: PathTarget(urlsplit(url).path, **options),
}


def open_target(url_or_path: str | os.PathLike, **options) -> Target:
    """Return the Target for ``nfs://server/export[/path]``, ``file:///path`` or a path.

    Options are passed to the implementation (``io_workers``, ``timeout``...).
    Nothing is contacted until the first operation or ``connect()``.
    """
    s = os.fspath(url_or_path)
    scheme, sep, _ = s.partition("://")
    if sep:
        factory = SCHEMES.get(scheme)
        if factory is None:
            raise InvalidPath(s, f"unsupported URL scheme {scheme!r}: use one of {sorted(SCHEMES)} or a path")
        return factory(s, **options)
    return PathTarget(s, **options)
