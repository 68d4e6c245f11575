"""The export's manifest: ``export_manifest.json`` and ``SHA256SUMS`` in the export folder.

The manifest says which store (its provenance, as the sharing manifests record it: simulator
version and commit, every parameter, seed), which mask (with both acceleration conventions),
which subjects (key, id, store row, split, files with their checksum), the layout and conventions of
the format, and the implicit-data-crimes caveat. ``SHA256SUMS`` lists every exported file
(``cd DIR && sha256sum -c SHA256SUMS``), or ``XXH128SUMS`` for ``checksum='xxh3_128'``
(``xxhsum -c XXH128SUMS``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from kspace_sim.sharing.manifest import format_sha256sums, store_provenance

RECORDS_DIR = ".export/records"  # one JSON record per exported subject
MANIFEST_FILE = "export_manifest.json"


def _write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)

__all__ = ["write_export_manifest", "acceleration_conventions", "DATA_CRIMES_CAVEAT"]

DATA_CRIMES_CAVEAT = (
    "This k-space is simulated from processed, coil-combined magnitude images (plus a synthetic smooth "
    "phase), not acquired: reconstruction results on it are optimistic ('implicit data crimes', Shimron "
    "et al., PNAS 2022;119:e2117203119). Do not compare them with results on raw scanner data."
)


def acceleration_conventions(spec: dict[str, Any], acs: np.ndarray) -> dict[str, Any]:
    """R of the mask counted both ways: the store's (fastMRI: every sampled line, ACS included) and
    CMRxRecon's (ACS lines excluded)."""
    return {
        "nominal_acceleration": float(spec.get("acceleration", float("nan"))),
        "achieved_acceleration_with_acs": spec.get("achieved_acceleration"),
        "achieved_acceleration_without_acs": spec.get("achieved_acceleration_without_acs"),
        "acs_lines": int(np.count_nonzero(acs)),
        "store_convention": "R = W / lines sampled per frame, ACS lines included (fastMRI's convention); "
                            "the mask name's R is this nominal value",
        "cmrxrecon_convention": "CMRxRecon's acceleration factor does not count the ACS lines: compare with "
                                "achieved_acceleration_without_acs",
    }


def _layout(fmt: str, attrs: dict[str, Any], mask_name: str) -> dict[str, Any]:
    views = attrs.get("views", {})
    order = attrs.get("view_order", [])
    if fmt == "ismrmrd":
        return {
            "files": "<key>/<view>.h5 (ISMRMRD HDF5, group 'dataset'): one file per subject and view",
            "views": order,
            "acquisitions": "one per sampled phase-encoding line, frame by frame, ky ascending; "
                            "idx.kspace_encode_step_1 = ky (store axis W), idx.phase = frame; readout = store axis H; "
                            "channels = coils (1: the store has no coils)",
            "flags": "FIRST/LAST_IN_ENCODE_STEP1 and FIRST/LAST_IN_PHASE on each frame's first/last line; "
                     "FIRST/LAST_IN_SLICE, LAST_IN_MEASUREMENT; sampled ACS lines: IS_PARALLEL_CALIBRATION + "
                     "IS_PARALLEL_CALIBRATION_AND_IMAGING",
            "header_nominal_values": "H1 resonance frequency of 1.5 T and slice thickness (SAX 8 mm, LAX 6 mm) are "
                                     "UK Biobank's protocol values (the store does not record them); directions are unit axes",
        }
    return {
        "files": {
            "full": "MultiCoil/Cine/<Set>/FullSample/<key>/cine_{sax,lax}.mat: kspace_full",
            "undersampled": f"MultiCoil/Cine/<Set>/UnderSample_Task2/<key>/cine_{{sax,lax}}_kus_{mask_name}.mat: kus",
            "mask": f"MultiCoil/Cine/<Set>/Mask_Task2/<key>/cine_{{sax,lax}}_mask_{mask_name}.mat: mask",
        },
        "sets": {"train": "TrainingSet", "validation": "ValidationSet", "test": "TestSet"},
        "array_order": "MATLAB (nx, ny, nc, nz, nt) = (readout H, phase encodes W, coils, slices, frames); "
                       "h5py reads the reversed shape (nt, nz, nc, ny, nx); complex single as compound {real, imag}",
        "mask_order": "MATLAB (nx, ny, nz, nt) logical (the challenge's k-t masks are (nx, ny, nt): ours differ per slice)",
        "cine_sax_slices": [order[i] for i in views.get("sax", [])],
        "cine_lax_slices": [order[i] for i in views.get("lax", [])],
        "file_format": "MATLAB v7.3 (HDF5 with the 512-byte MATLAB header, MATLAB_class attributes)",
        "kus": "kspace_full .* reshape(mask, [nx, ny, 1, nz, nt])",
    }


def write_export_manifest(
    out: Path, attrs: dict[str, Any], identity: dict[str, Any], mask_name: str, spec: dict[str, Any], acs: np.ndarray,
) -> tuple[int, int]:
    """Write ``export_manifest.json`` and ``SHA256SUMS`` from the subjects' completion records;
    returns (files, bytes) listed."""
    from kspace_sim.export.subject_task import CHECKSUMS
    from kspace_sim.store.layout import SPLIT_CODES

    split_names = {v: k for k, v in SPLIT_CODES.items()}
    records = []
    for p in sorted((out / RECORDS_DIR).glob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if rec.get("store_fingerprint") == identity["store_fingerprint"]:
            records.append(rec)
    records.sort(key=lambda r: r["row"])
    algo = identity.get("checksum", "sha256")
    sums_file = CHECKSUMS[algo]
    sums = {rel: d[algo] for r in records for rel, d in r["files"].items()}
    n_bytes = sum(d["bytes"] for r in records for d in r["files"].values())
    doc = {
        "format": "kspace-sim-export",
        "export_format_version": 1,
        "export_format": identity["format"],
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "store": {"location": identity["store"], "fingerprint": identity["store_fingerprint"], "provenance": store_provenance(attrs)},
        "mask": {"name": mask_name, **{k: v for k, v in spec.items() if not k.startswith(("acceleration", "achieved"))},
                 "acceleration": acceleration_conventions(spec, acs)},
        "layout": _layout(identity["format"], attrs, mask_name),
        "fft_convention": attrs.get("fft_convention"),
        **({"coils": attrs["coils"]} if attrs.get("coils") else {}),  # channels = the store's coils, synthesised by its rule
        "caveat": DATA_CRIMES_CAVEAT,
        "subjects": [
            {"key": r["key"], "subject_id": r["subject_id"], "row": r["row"], "split": split_names.get(r["split"], str(r["split"])),
             "files": {rel: d[algo] for rel, d in r["files"].items()}}
            for r in records
        ],
        "checksums": {"algorithm": algo, "file": sums_file, "files": len(sums), "bytes": n_bytes},
    }
    tmp = out / f".{sums_file}.tmp"
    tmp.write_text(format_sha256sums(sums))  # "<hex>  <path>" lines: sha256sum's and xxhsum's format
    tmp.replace(out / sums_file)
    _write_json_atomic(out / MANIFEST_FILE, doc)
    return len(sums), n_bytes
