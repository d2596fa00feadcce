"""Run folders: created fresh, replaced with `--force` only when frugalml itself made them
(a marker file says so), and file-system failures turned into errors naming the path."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from frugalml.errors import OutputError, OutputExistsError

RUN_MARKER = ".frugalml-run"


def prepare_run_dir(
    path: Path,
    *,
    force: bool,
    marker: str = RUN_MARKER,
    kind: str = "frugalml run folder",
    writer: str = "frugalml fit",
) -> Path:
    """Create a fresh run folder; with `force`, replace only a folder holding `marker` (one
    `writer` made)."""
    if path.exists() and (path.is_file() or any(path.iterdir())):
        if not force:
            raise OutputExistsError(
                f"{path} already exists and is not empty",
                ["choose another --out, or pass --force to replace it"],
            )
        if not (path / marker).exists():
            raise OutputExistsError(
                f"{path} is not a {kind}, so --force will not delete it",
                ["choose another --out; frugalml only replaces folders it created"],
            )
        write_guarded(path, "replace the run folder", lambda: shutil.rmtree(path))

    def make() -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / marker).write_text(f"This folder was written by {writer}.\n")

    write_guarded(path, "write the run folder", make)
    return path


def write_guarded(path: Path, what: str, action: Callable[[], object]) -> None:
    """Run a file system action on the run folder; its failure (a read-only disk, an immutable
    folder, a file where a folder should be) becomes an error naming the path and the cause."""
    try:
        action()
    except OSError as error:
        where = (
            f" ({error.filename})" if error.filename and str(error.filename) != str(path) else ""
        )
        hints = ["choose an --out on a disk you can write to"]
        if what.startswith("replace"):
            hints = ["some of its files may be gone; fix its permissions or choose another --out"]
        raise OutputError(
            f"cannot {what} {path}: {error.strerror or error}{where}", hints
        ) from None
