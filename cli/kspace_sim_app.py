"""``kspace-sim``: the simulator's command line (thin: parse, call the library, print)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from cli.tables import failures_table

app = typer.Typer(
    help="UK Biobank cine MRI → complex k-space Zarr stores with undersampling masks and labels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True, soft_wrap=True)

# 160 demo subjects with a 20 % test split (32 test, 16 validation, 112 training subjects): enough held-out
# subjects for paired tests in `kmtr eval`, and the cohort (~3 s per subject) plus the build still fit
# README command 1's 30-minute budget on 2 cores (issue 23)
DEFAULT_DEMO_SUBJECTS = 160
DEFAULT_DEMO_TEST_SIZE = 0.2
DEFAULT_PATTERN = "vista"


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def _default_pattern() -> str:
    from kspace_sim.masks import available_patterns

    return DEFAULT_PATTERN if DEFAULT_PATTERN in available_patterns() else "gaussian"


@app.command()
def demo(
    out: Path = typer.Option(..., "--out", help="folder to write the demo cohort into"),
    subjects: int = typer.Option(DEFAULT_DEMO_SUBJECTS, "--subjects", "-n", min=1, help="number of subjects"),
    seed: int = typer.Option(0, help="global seed"),
    workers: int = typer.Option(2, help="processes"),
    format: str = typer.Option("nifti", help="nifti (UKB NIfTI layout) or dicom (UKB DICOM zips, fields 20208/20209)"),
) -> None:
    """Write a synthetic demo cohort (beating 3D+t heart phantoms) in the UK Biobank layout."""
    import time

    from kspace_sim.demo import write_demo_cohort

    if format not in ("nifti", "dicom"):
        _fail(f"--format must be nifti or dicom, not {format!r}")
    t0 = time.perf_counter()
    nifti_dir = out if format == "nifti" else out / "nifti"
    eids = write_demo_cohort(nifti_dir, subjects, seed=seed, workers=workers, progress=True)
    if format == "dicom":
        from kspace_sim.demo.dicom_export import export_cohort_dicom

        export_cohort_dicom(nifti_dir, out / "zips", workers=workers)
        console.print(f"DICOM zips in {out / 'zips'}; NIfTI (with segmentations for --seg) in {nifti_dir}")
    console.print(f"wrote {len(eids)} demo subjects to {out} in {time.perf_counter() - t0:.1f} s")


def _print_build_report(report, phenotype_summary=None) -> None:  # type: ignore[no-untyped-def]
    t = Table(title="kspace-sim build", show_header=False)
    t.add_row("store", report.store)
    t.add_row("subjects", f"{report.n_subjects} ({report.done} done, {len(report.failed)} failed, {report.skipped} already done before this run)")
    t.add_row("input entries skipped", f"{len(report.skipped_entries)} (not subjects, listed below)" if report.skipped_entries else "0")
    t.add_row("splits", ", ".join(f"{k} {v}" for k, v in report.splits.items()))
    t.add_row("coils", report.coils or "single coil, noise-free (format version 1)")
    t.add_row("processed this run", f"{report.processed} in {report.seconds:.1f} s ({report.subjects_per_second:.2f} subjects/s)")
    for name, acc in report.achieved_acceleration.items():
        t.add_row(f"mask {name}", f"achieved R = {acc['achieved_acceleration']:.4f} (without ACS lines {acc['achieved_acceleration_without_acs']:.4f})")
    if report.store_bytes is not None:
        t.add_row("store size", f"{report.store_bytes / 2**20:.1f} MiB")
    if report.float16_image_nrmse is not None:
        t.add_row("float16 storage error", f"image NRMSE max {report.float16_image_nrmse:.2e}")
    console.print(t)
    if report.label_summary:
        from kspace_sim.labels.summary import render_summary

        console.print(render_summary(report.label_summary, title="labels of the done subjects"))
    if report.failed:
        console.print(failures_table(report.failed))
    print_skipped_entries(report.skipped_entries)


def print_skipped_entries(skipped: list[tuple[str, str]]) -> None:
    """One line per input entry that is not a subject, with the reason."""
    for name, reason in skipped:
        console.print(f"skipped {name}: {reason}")


@app.command()
def build(
    acc: list[float] = typer.Option([4.0], "--acc", help="acceleration R (repeat for several masks)"),
    input: Optional[Path] = typer.Option(None, "--input", help="cohort folder (UKB NIfTI subjects or DICOM zips); default: the demo cohort"),
    out: Optional[str] = typer.Option(None, "--out", help="store path or fsspec URL; default stores/<demo|cohort>-<mask>.zarr"),
    mask: Optional[str] = typer.Option(None, "--mask", help="undersampling pattern (default vista); see `kspace-sim masks list`"),
    mask_bank: Optional[int] = typer.Option(None, "--mask-bank", help="K patterns computed once per build, each slice takes one (seeded) with a random time shift; 0 = a fresh pattern per slice (default 16 for vista, else 0)"),
    seed: int = typer.Option(0, help="global seed: per-subject seeds derive from it and the subject id"),
    workers: int = typer.Option(2, help="Dask worker processes (0 = serial, in this process)"),
    scheduler: Optional[str] = typer.Option(None, help="address of an existing Dask scheduler"),
    seg: Optional[Path] = typer.Option(None, "--seg", help="segmentation folder (<id>/seg_*.nii.gz) for DICOM zip input"),
    labels: bool = typer.Option(True, "--labels/--no-labels", help="derive phenotypes and disease labels in the same pass"),
    table: Optional[Path] = typer.Option(None, "--table", help="UKB participant table (CSV/TSV) for disease labels; default: the cohort's participants.csv if present"),
    policy: str = typer.Option("any", help="disease date policy: any, or prevalent (diagnosed on or before the imaging visit)"),
    codes: Optional[Path] = typer.Option(None, help="TOML file of disease code lists (default: the shipped lists)"),
    labels_parquet: Optional[Path] = typer.Option(None, "--labels-parquet", help="label table path (default <store>.labels.parquet beside a local store)"),
    test_size: Optional[float] = typer.Option(None, "--test-size", help="held-out test subjects (count, or fraction < 1); default 1000 for >= 10,000 subjects, else 10 % (the demo cohort: 20 %)"),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="also publish a Croissant manifest (e.g. data_manifests/NAME.json)"),
    ukb_application: Optional[str] = typer.Option(None, "--ukb-application", help="UK Biobank application number recorded in the manifest"),
    compression: str = typer.Option("none", help="k-space compression: none or zstd"),
    chunking: str = typer.Option("subject", help="subject (one chunk per subject and array) or sharded (a chunk per view in one shard per subject)"),
    storage: str = typer.Option("complex64", help="k-space storage: complex64, or float16 (real/imag pairs, per-subject scale)"),
    pseudonymise: bool = typer.Option(False, "--pseudonymise", help="store keyed-hash pseudonyms instead of ids (key: $KSPACE_SIM_PSEUDONYM_KEY or --key-file)"),
    key_file: Optional[Path] = typer.Option(None, "--key-file", help="file holding the pseudonymisation key"),
    demo_subjects: int = typer.Option(DEFAULT_DEMO_SUBJECTS, help="demo cohort size when --input is not given"),
    frames: int = typer.Option(50, help="frames T"),
    crop: int = typer.Option(128, help="crop H = W"),
    coils: int = typer.Option(1, "--coils", help="receive coils K: K > 1 stores coil maps, noise sigma and seeds (format version 2; coil k-space is synthesised where consumed); 1 = today's single-coil store"),
    snr: Optional[float] = typer.Option(None, "--snr", help="thermal noise at this SNR in dB (mean heart magnitude of each view over one coil's noise sigma; docs/store-format.md); default: noise-free"),
    coil_model: str = typer.Option("birdcage", "--coil-model", help="coil sensitivities: birdcage (sigpy's model, per-view geometry) or random_field"),
    noise_correlation: float = typer.Option(0.0, "--noise-correlation", help="coil noise correlation rho (needs --snr); must give a positive-definite matrix"),
    noise_correlation_kind: str = typer.Option("exponential", "--noise-correlation-kind", help="exponential (rho^|i-j|) or constant (rho off the diagonal)"),
) -> None:
    """Simulate k-space, masks and labels for a cohort into a Zarr v3 store (resumable)."""
    from kspace_sim.build import BuildConfig, build_store, validate_build
    from kspace_sim.coil_settings import CoilSettings
    from kspace_sim.paths import default_store_path, demo_cohort_dir
    from kspace_sim.simulate import MaskSpec, SimulationParams
    from kspace_sim.sources.discover import InputError
    from kspace_sim.labels.diseases import TableError
    from kspace_sim.sharing.manifest import ManifestError
    from kspace_sim.store.layout import StoreError

    pattern = mask or _default_pattern()
    specs = [MaskSpec(pattern, r, bank_size=mask_bank) for r in acc]  # None: the library's default bank
    params = SimulationParams(crop=crop, frames=frames)
    if input is not None and not input.exists():
        _fail(f"input path {input} does not exist")
    if test_size is not None and test_size >= 1 and float(test_size).is_integer():
        test_size = int(test_size)  # a count of subjects
    key = None
    if pseudonymise or key_file:
        from kspace_sim.privacy import load_pseudonym_key

        try:
            key = load_pseudonym_key(key_file)
        except (ValueError, OSError) as exc:
            _fail(str(exc))
    is_demo = input is None
    if is_demo:
        input = demo_cohort_dir(demo_subjects, seed)
        if test_size is None:
            test_size = DEFAULT_DEMO_TEST_SIZE
    coil_settings = CoilSettings(coils, snr, coil_model, noise_correlation, noise_correlation_kind)
    if out is None:
        out = default_store_path([s.name for s in specs], is_demo)
        if coil_settings.enabled:
            out = out.removesuffix(".zarr") + f"-coils{coils}" + (f"-snr{snr:g}" if snr is not None else "") + ".zarr"
    cfg = BuildConfig(
        input_dir=str(input), out=out, masks=specs, params=params, seed=seed, workers=workers,
        scheduler=scheduler, compression=compression, seg_dir=str(seg) if seg else None,
        storage=storage, chunking=chunking, pseudonym_key=key, labels=labels, table=str(table) if table else None, policy=policy,
        codes=str(codes) if codes else None, labels_parquet=str(labels_parquet) if labels_parquet else None,
        test_size=test_size, manifest=str(manifest) if manifest else None, ukb_application=ukb_application,
        coils=coil_settings,
    )
    try:
        validate_build(cfg)  # every parameter combination, before the demo cohort or the store is written
    except ValueError as exc:
        _fail(str(exc))
    if is_demo:
        from kspace_sim.demo import write_demo_cohort

        console.print(f"no --input: using the demo cohort ({demo_subjects} subjects) in {input}")
        write_demo_cohort(input, demo_subjects, seed=seed, workers=max(workers, 1), progress=True)
    try:
        report = build_store(cfg, on_failure=lambda sid, reason: err.print(f"[yellow]subject {sid} failed:[/] {reason}"))
    except (InputError, StoreError, ValueError, TableError, ManifestError) as exc:
        _fail(str(exc))
    _print_build_report(report)


@app.command()
def inspect(store: str = typer.Argument(..., help="store path or URL")) -> None:
    """Print a store's contents and provenance."""
    import json

    from kspace_sim.inspect_store import describe_store
    from kspace_sim.store.layout import StoreError

    try:
        d = describe_store(store)
    except StoreError as exc:
        _fail(str(exc))
    t = Table(title=f"store {store}")
    t.add_column("array")
    t.add_column("shape")
    t.add_column("dtype")
    for name, a in sorted(d["arrays"].items()):
        t.add_row(name, str(a["shape"]), a["dtype"])
    console.print(t)
    console.print(f"subjects: {d['n_subjects']} ({d['done']} done, {len(d['failed'])} failed, {d['pending']} pending); splits of done subjects: {d['splits']}")
    for name, m in d["masks"].items():
        console.print(f"mask {name}: pattern {m.get('pattern')} R {m.get('acceleration')} achieved {m.get('achieved_acceleration'):.4f} (without ACS {m.get('achieved_acceleration_without_acs'):.4f})")
    for sid, reason in d["failed"]:
        console.print(f"[yellow]failed[/] {sid}: {reason}")
    console.print_json(json.dumps(d["attrs"], default=str))
    console.print(f"{len(d['builds'])} build run(s) logged")


@app.command()
def preview(
    store: str = typer.Argument(..., help="store path or URL"),
    subject: str = typer.Option(..., "--subject", help="subject id as stored"),
    mask: Optional[str] = typer.Option(None, help="mask name (default: the first)"),
    frame: int = typer.Option(0, help="frame to show"),
    out: Optional[Path] = typer.Option(None, help="PNG path (default preview-<row>.png)"),
    coil_view: int = typer.Option(0, "--coil-view", help="store with coils: the view whose coil maps are shown (0 = sax0)"),
    coil: int = typer.Option(0, "--coil", help="store with coils: the coil whose k-space is shown"),
) -> None:
    """PNG per view: image, log-magnitude k-space, mask, zero-filled undersampled image; for a store
    with coils also <out>-coils.png: the coil maps and one coil's k-space."""
    from kspace_sim.preview import render_previews
    from kspace_sim.store.layout import StoreError

    try:
        paths = render_previews(store, subject, mask_name=mask, frame=frame, out=out, coil_view=coil_view, coil=coil)
    except (StoreError, KeyError, ValueError) as exc:
        _fail(str(exc))
    for path in paths:
        console.print(f"wrote {path}")


for _module in ("cli.masks_cmd", "cli.labels_cmd", "cli.convert_cmd", "cli.store_cmds", "cli.sharing_cmds", "cli.export_cmd"):
    try:
        importlib.import_module(_module).register(app)
    except ModuleNotFoundError as _exc:  # a command module not shipped in this build
        if _exc.name != _module:
            raise


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
