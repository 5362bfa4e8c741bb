"""Post-processing shared by the example pipelines: a manifest of a recording's files per uid."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def merge_file_lists(*file_lists: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """All files named in any list, first occurrence wins: a file Agora listed once is never dropped."""
    merged: dict[str, dict[str, Any]] = {}
    for files in file_lists:
        for item in files or []:
            merged.setdefault(str(item.get("fileName")), item)
    return list(merged.values())


def build_manifest(sid: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    """Group files per uid ("0" = the mixed stream), with their start times, oldest first."""
    by_uid: dict[str, list[dict[str, Any]]] = {}
    for item in files:
        uid = str(item.get("uid", "0"))
        by_uid.setdefault(uid, []).append(
            {key: item[key] for key in ("fileName", "uri", "trackType", "sliceStartTime", "isPlayable") if key in item}
        )
    for entries in by_uid.values():
        entries.sort(key=lambda entry: (entry.get("sliceStartTime") or 0, entry["fileName"]))
    return {"sid": sid, "file_count": len(files), "files_by_uid": dict(sorted(by_uid.items()))}


def _written(name: str, content: Any) -> str:
    """Write next to the Airflow home unless AGORA_MANIFEST_DIR says otherwise; return the path."""
    folder = Path(os.environ.get("AGORA_MANIFEST_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "manifests")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    return str(path)


def write_manifest(manifest: dict[str, Any]) -> str:
    return _written(f"{manifest['sid']}.json", manifest)


def write_playlists(sid: str, summaries: list[dict[str, Any]]) -> str:
    """What a downstream task read of each playlist in the bucket."""
    return _written(f"{sid}.playlists.json", summaries)
