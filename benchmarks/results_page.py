"""The shared results page: each benchmark script replaces its own section and keeps the others."""

from __future__ import annotations

import os
import platform
import sqlite3
from pathlib import Path

__all__ = ["machine", "write_section"]

HEADER = (
    "# Benchmark results\n\n"
    "Each section is written by the script named in its command line, on the machine it names, with every\n"
    "figure beside its reference from the same run. Absolute numbers vary with the disk and with other\n"
    "load on the machine; the ratios are the point.\n"
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}"
    )


def write_section(path: Path, title_prefix: str, section: str) -> None:
    """Replace the section whose heading starts with `title_prefix`, keeping every other section."""
    existing = path.read_text(encoding="utf-8") if path.exists() else HEADER
    parts = existing.split("\n## ")
    kept = [part for part in parts[1:] if not part.startswith(title_prefix)]
    text = HEADER.rstrip() + "\n\n" + "".join(f"## {part.rstrip()}\n\n" for part in kept) + section.rstrip() + "\n"
    path.write_text(text, encoding="utf-8")
