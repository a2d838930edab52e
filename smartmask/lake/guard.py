"""Published data is immutable: the checks a front end runs on a folder the user names before it writes anything.

Each part of a lake has exactly one owner, and nothing else may write under it:

    <lake>/datasets/...           `rebuild` (publish renames a finished version into place; never touched again)
    <lake>/models/...             `train` (registry.register renames a finished model version into place)
    <lake>/_staging/...           `rebuild` and `train` (work in progress)
    <lake>/caption_cache/...      `rebuild`'s captioner
    <lake>/_locks/, <lake>/_ray/  the lock files of running jobs; Ray Train's run state
    <lake>/planners/...           `train-planner` (registered LLaVA planner versions)
    <lake>/layouts/...            `design` and `layout` edits (stored layout versions, each renamed into place)
    <lake>/runs/kind=<kind>/...   the stage of that kind (train, bench, suggest, insert, ...)

Writing there from another command corrupts the lake: masks saved inside a published dataset version made every
later `--layout-from` on it fail. `check_output_dir` refuses such a folder, and a lake inside one
(`check_lake_folder(..., writes=True)`).

Which lakes: the one the command was given, and any other one on the way up from the folder. A folder is taken for a
lake when it holds `datasets/name=*`, `models/version=*` or `_staging/{datasets,models}` (that is what rebuild and
train create, so a lake is recognised as soon as it holds anything worth protecting). Independently of what exists,
a path with the shape of a protected folder is refused too, so a not-yet-created lake cannot be seeded with stray
files either: `.../datasets/name=*/version=*/...`, `.../models/version=*/...`, `.../_staging/{datasets,models}/...`.
Symlinks are resolved first, so a link pointing into a lake is judged by where it points. Folder names are compared
without case: on a case-insensitive file system (macOS) `Datasets/` is `datasets/`.

Errors are `PathRefused`, one line in plain words; the front end adds the flag (`--out`, `--lake`).
"""

from __future__ import annotations

import os
from pathlib import Path

#: top-level lake folder → the command that owns it (in messages)
OWNERS = {"datasets": "`smartmask rebuild` (published dataset versions)",
          "models": "`smartmask train` (registered model versions)",
          "_staging": "`rebuild` and `train` (work in progress)",
          "caption_cache": "`rebuild`'s captioner",
          "_locks": "the running rebuilds and trainings (their lock files)",
          "_ray": "`smartmask train` (Ray Train's run state)",
          "planners": "`smartmask train-planner` (registered planner versions)",
          "layouts": "`smartmask design` and `smartmask layout` (stored layout versions)"}


class PathRefused(ValueError):
    """A folder a command may not use: a file where a folder is needed, not writable, or part of a lake that
    another stage owns. One line."""


def _looks_like_lake(folder: Path) -> bool:
    """True when `folder` holds something only rebuild or train write (see the module docstring)."""
    try:
        return (any((folder / "datasets").glob("name=*")) or any((folder / "models").glob("version=*"))
                or (folder / "_staging" / "datasets").is_dir() or (folder / "_staging" / "models").is_dir())
    except OSError:  # unreadable: not ours to judge
        return False


def _shape_reason(path: Path) -> str | None:
    """Why `path` has the shape of a protected lake folder (whether or not it exists yet), or None."""
    parts = path.parts
    low = [p.lower() for p in parts]
    for i, part in enumerate(low):
        rest = low[i + 1:]
        if part == "datasets" and len(rest) >= 2 and rest[0].startswith("name=") and rest[1].startswith("version="):
            return f"{Path(*parts[:i + 3])} is a dataset version folder, which only {OWNERS['datasets']} writes"
        if part == "models" and rest and rest[0].startswith("version="):
            return f"{Path(*parts[:i + 2])} is a model version folder, which only {OWNERS['models']} writes"
        if part == "_staging" and rest and rest[0] in ("datasets", "models"):
            return f"{Path(*parts[:i + 1])} is a lake's staging area, which only {OWNERS['_staging']} writes"
    return None


def protected_reason(path: Path, lake: Path | None = None, kind: str | None = None) -> str | None:
    """Why a command of `kind` (e.g. "suggest"; None: a command with no run folder of its own) may not write into
    `path`, or None when it may. `lake` is the lake the command was given; other lakes are found from `path`."""
    path = Path(path).resolve()
    roots = [Path(lake).resolve()] if lake is not None else []
    roots += [a for a in (path, *path.parents) if a not in roots and _looks_like_lake(a)]
    for root in roots:
        if path == root:
            return f"{path} is a lake folder itself; write outputs outside it (or in its runs/kind={kind or '…'}/)"
        if not path.is_relative_to(root):
            continue
        rel = [p.lower() for p in path.relative_to(root).parts]
        if rel[0] in OWNERS:
            return f"{path} is inside {root / rel[0]}, which only {OWNERS[rel[0]]} writes"
        if rel[0] == "runs" and (kind is None or len(rel) < 3 or rel[1] != f"kind={kind}".lower()):
            # each run folder belongs to the stage of its kind; a command may add runs of its own kind only
            own = f" (a {kind} run goes in {root / 'runs' / f'kind={kind}'}/<name>)" if kind else ""
            return f"{path} is inside {root / 'runs'}, where each stage writes only its own runs{own}"
    return _shape_reason(path)


def _nearest_existing(path: Path) -> Path:
    for a in (path, *path.parents):
        if a.exists():
            return a
    return Path(path.anchor)


def check_output_dir(out: str | os.PathLike, lake: str | os.PathLike | None = None, kind: str | None = None) -> Path:
    """`out` resolved, when a command of `kind` may create and write files in it; else `PathRefused`.

    Refused: a folder a lake protects (see `protected_reason`), an existing file, a path under a file, and a folder
    the process cannot write (`os.access`; as root that check passes except on read-only file systems, like any
    write would). Nothing is created here: the command creates the folder when it writes its first file.
    """
    path = Path(out).expanduser().resolve()
    why = protected_reason(path, None if lake is None else Path(lake), kind)
    if why:
        raise PathRefused(why)
    if path.exists() and not path.is_dir():
        raise PathRefused(f"{path} is a file, not a folder")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise PathRefused(f"cannot create {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        what = "" if base == path else f"cannot create {path}: "
        raise PathRefused(f"{what}{base} is not writable")
    return path


def check_lake_folder(lake: str | os.PathLike, *, must_exist: bool = False, writes: bool = False) -> Path:
    """`lake` resolved, when it can be used as a lake; else `PathRefused`.

    Always refused: a file. `must_exist`: a folder that does not exist (a reader, e.g. `query`, would otherwise
    answer a typo with an empty result). `writes` (a command that writes into the lake): a lake nested inside a
    folder another lake protects, and a lake that cannot be created or written.
    """
    path = Path(lake).expanduser().resolve()
    if path.is_file():
        raise PathRefused(f"{path} is a file, not a lake folder")
    if must_exist and not path.is_dir():
        raise PathRefused(f"no lake at {path}: the folder does not exist")
    if writes:
        outer = [a for a in path.parents if _looks_like_lake(a)]
        why = next((r for a in outer if (r := protected_reason(path, a))), None) or _shape_reason(path)
        if why:
            raise PathRefused(f"a lake cannot live there: {why}")
        base = _nearest_existing(path)
        if not base.is_dir():
            raise PathRefused(f"cannot create the lake {path}: {base} is a file, not a folder")
        if not os.access(base, os.W_OK | os.X_OK):
            raise PathRefused(f"{base} is not writable")
    return path
