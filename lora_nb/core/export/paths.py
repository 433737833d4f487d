"""Where an export may write: a new or empty folder, or one an earlier export of the same kind wrote."""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import AdapterFileError

MARKER = ".lora_nb_export"  # written into every export folder: names the format, so a rerun may replace it


def export_folder(path: str | os.PathLike, kind: str) -> Path:
    """``path`` as an absolute folder that an export of ``kind`` may (over)write; one-line error otherwise."""
    target = Path(path).expanduser().absolute()
    if target == Path.cwd().absolute():
        raise AdapterFileError(f"{target} is the working folder; export into a new sub-folder instead")
    if target.exists() and not target.is_dir():
        raise AdapterFileError(f"{target} is a file; give a folder to export into")
    if target.is_dir() and any(target.iterdir()):
        marker = target / MARKER
        if not marker.is_file() or marker.read_text().strip() != kind:
            raise AdapterFileError(f"{target} is not empty and holds no earlier `{kind}` export; "
                                   "choose a new or empty folder")
    parent = target if target.exists() else next(p for p in target.parents if p.exists())
    if not os.access(parent, os.W_OK):
        raise AdapterFileError(f"cannot write into {parent} (permission denied)")
    return target


def mark(folder: Path, kind: str) -> None:
    (folder / MARKER).write_text(kind + "\n")
