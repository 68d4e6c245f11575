"""What a store's content is, as opposed to the incidental bytes of its metadata.

A store's files are of two kinds:

* **data** (chunk and shard files: ``kspace``, ``seg``, ``masks/*``, ``labels/*``, ``subjects/*``):
  compared byte for byte: a flipped byte anywhere fails;
* **metadata** (``zarr.json``): compared by content, i.e. the JSON document with its volatile
  parts removed: the root group's creation time (``created``), git commit (``git_commit``) and build
  log (``builds``), the float16 error of the last run alone (``float16_image_nrmse.mean_this_run``),
  every duration (a ``seconds`` key at any depth of ``attributes``, e.g. ``labels/diseases``'s
  table-reading time), and the root's consolidated copy of the other documents (each is compared
  on its own). Shapes, data types, chunking, codecs, fill values and every other attribute (the
  parameters, the seed, the label columns, ...) stay in the content.

:func:`store_content` summarises a store as the manifest records it (``metadata_sha256``: the
content digest of every metadata file; ``arrays``: every array's shape and data type), and
:func:`content_listing` is the text whose SHA-256 a manifest gives as the store's digest: stable
across rebuilds of the same content.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = [
    "METADATA_FILES",
    "VOLATILE_ROOT_ATTRIBUTES",
    "VOLATILE_DESCRIPTION",
    "is_metadata_file",
    "canonical_metadata",
    "metadata_digest",
    "store_content",
    "content_listing",
]

METADATA_FILES = ("zarr.json", ".zattrs", ".zarray", ".zgroup", ".zmetadata")
VOLATILE_ROOT_ATTRIBUTES = ("created", "git_commit", "builds")
VOLATILE_DESCRIPTION = "creation time, build log, durations, git commit"


def is_metadata_file(path: str) -> bool:
    """True for a Zarr metadata document (``zarr.json``, or a Zarr v2 ``.z*`` file)."""
    return path.rsplit("/", 1)[-1] in METADATA_FILES


def _drop_durations(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_durations(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_drop_durations(v) for v in value]
    return value


def canonical_metadata(path: str, raw: bytes) -> dict[str, Any]:
    """The content of metadata file ``path`` (relative to the store root): its JSON without the
    volatile parts listed in the module docstring."""
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        return {"value": doc}
    doc.pop("consolidated_metadata", None)
    attrs = doc.get("attributes")
    if isinstance(attrs, dict):
        attrs = _drop_durations(attrs)
        if path in ("zarr.json", ".zattrs"):  # the root group
            for key in VOLATILE_ROOT_ATTRIBUTES:
                attrs.pop(key, None)
            nrmse = attrs.get("float16_image_nrmse")
            if isinstance(nrmse, dict):
                attrs["float16_image_nrmse"] = {k: v for k, v in nrmse.items() if k != "mean_this_run"}
        doc["attributes"] = attrs
    return doc


def metadata_digest(path: str, raw: bytes) -> str:
    """SHA-256 (hex) of the canonical JSON (sorted keys, compact) of :func:`canonical_metadata`."""
    text = json.dumps(canonical_metadata(path, raw), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def store_content(fs: Any, root: str, paths: list[str]) -> dict[str, Any]:
    """``{"metadata_sha256": {path: digest}, "arrays": {name: {"shape", "dtype"}}}`` of the store at
    ``root`` on filesystem ``fs``, from its metadata files among ``paths`` (relative paths)."""
    digests: dict[str, str] = {}
    arrays: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in paths if is_metadata_file(p)):
        with fs.open(f"{root}/{path}", "rb") as fh:
            raw = fh.read()
        digests[path] = metadata_digest(path, raw)
        doc = json.loads(raw)
        if isinstance(doc, dict) and doc.get("node_type") == "array":
            name = path.rsplit("/", 1)[0] if "/" in path else ""
            arrays[name] = {"shape": list(doc.get("shape", [])), "dtype": str(doc.get("data_type"))}
    return {"metadata_sha256": digests, "arrays": arrays}


def content_listing(file_hashes: dict[str, str], metadata_sha256: dict[str, str]) -> str:
    """``sha256sum``-style lines of the store's content: data files by their bytes, metadata files
    by their content digest (sorted by path)."""
    lines = []
    for path in sorted(file_hashes):
        digest = metadata_sha256.get(path, file_hashes[path]) if is_metadata_file(path) else file_hashes[path]
        lines.append(f"{digest}  {path}\n")
    return "".join(lines)
