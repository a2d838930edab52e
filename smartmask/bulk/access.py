"""Where a bulk job may read images from: the allowed roots and schemes, checked per URI before any byte is read.

A catalog comes from outside the team that runs the job, so its URIs are untrusted: `../../etc/shadow`, a
symlink out of the image folder, `file:///root/...`, `http://169.254.169.254/` must all be rejects, not reads.

- A local path or `file://` URI is resolved (relative paths against the catalog's folder, symlinks followed) and
  must then lie inside one of the allowed roots (`--allow-root`; default: the catalog's own folder).
- Any other scheme (`s3://`, `gs://`, `https://`, ...) is read through fsspec only when named with
  `--allow-scheme`; its bytes are bounded by `MAX_REMOTE_BYTES` before decoding.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

MAX_REMOTE_BYTES = 512 * 1024**2


class AccessDenied(ValueError):
    """The URI is outside what this job may read; `reason` is the reject code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Access:
    roots: tuple[Path, ...]  # resolved
    schemes: tuple[str, ...]
    base: Path  # relative paths are relative to this (the catalog's folder)

    @classmethod
    def of(cls, allow_roots: tuple[str, ...] | list[str], allow_schemes: tuple[str, ...] | list[str],
           base: str | os.PathLike) -> Access:
        base = Path(base).resolve()
        roots = tuple(Path(r).expanduser().resolve() for r in allow_roots) or (base,)
        return cls(roots, tuple(s.lower() for s in allow_schemes), base)

    def resolve(self, uri: str) -> str:
        """The local path (resolved) or the remote URI this job may read; AccessDenied otherwise."""
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if len(scheme) == 1:  # a Windows drive letter is not a scheme
            scheme = ""
        if scheme in ("", "file"):
            if scheme == "file":
                if parts.netloc not in ("", "localhost"):
                    raise AccessDenied("uri_not_allowed", f"file URI with a host: {uri[:200]}")
                raw = unquote(parts.path)
            else:
                raw = uri
            p = Path(raw).expanduser()
            p = (p if p.is_absolute() else self.base / p).resolve()
            if not any(p == r or p.is_relative_to(r) for r in self.roots):
                raise AccessDenied("uri_not_allowed", f"{uri[:200]} resolves to {p}, outside the allowed roots "
                                                      f"({', '.join(map(str, self.roots))})")
            return str(p)
        if scheme not in self.schemes:
            raise AccessDenied("scheme_not_allowed", f"scheme {scheme!r} is not allowed (allowed: "
                                                     f"{', '.join(self.schemes) or 'local files only'})")
        return uri

    @contextmanager
    def local_copy(self, uri: str) -> Iterator[Path]:
        """A local file holding the URI's bytes: the file itself when local, else a bounded download to a temp
        file removed afterwards."""
        target = self.resolve(uri)
        if not urlsplit(target).scheme or target.startswith("/"):
            yield Path(target)
            return
        import fsspec

        fd, tmp = tempfile.mkstemp(prefix="smartmask-bulk-", suffix=Path(urlsplit(target).path).suffix)
        try:
            with os.fdopen(fd, "wb") as out, fsspec.open(target, "rb") as src:
                got = 0
                while chunk := src.read(1 << 20):
                    got += len(chunk)
                    if got > MAX_REMOTE_BYTES:
                        raise AccessDenied("image_too_large", f"{uri[:200]}: more than {MAX_REMOTE_BYTES:,} bytes")
                    out.write(chunk)
            yield Path(tmp)
        finally:
            Path(tmp).unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
