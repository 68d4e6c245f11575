"""``kmtr``: the trainer's command line (thin: parse, call the library, print)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

app = typer.Typer(help="k-MTR: masked autoencoders and friends on cardiac MRI k-space stores.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


DEFAULT_DEMO_STORE = "stores/demo-vista_r4.zarr"  # what `kspace-sim build --acc 4` writes


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _data_or_demo(data: Optional[str]) -> str:
    """``--data``, or the demo store that `kspace-sim build --acc 4` writes (exit 2 when absent)."""
    if data is not None:
        return data
    from pathlib import Path

    if not Path(DEFAULT_DEMO_STORE).exists():
        _fail(f"no --data given and no demo store at {DEFAULT_DEMO_STORE} (run `kspace-sim build --acc 4` first)")
    return DEFAULT_DEMO_STORE


def _check_device(device: object) -> None:
    """``cuda`` asked for on a machine without CUDA: one line, exit 2 (before any work)."""
    if device is not None and str(device).strip().lower().startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            _fail(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}, "
                  f"built with CUDA {torch.version.cuda or 'none'}); use --device cpu or auto")


def _set_overrides(items: list[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` options as a dict (exit 2 on an item without '=')."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            _fail(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


@app.command()
def train(
    stage: Optional[int] = typer.Option(None, "--stage", help="1 = MAEs, 2 = contrastive alignment, 3 = tasks; "
                                        "default: 1 → 2 → 3 in sequence"),
    task: list[str] = typer.Option([], "--task", help="stage III task(s): regression | classification | "
                                   "segmentation | reconstruction (repeatable; default all four)"),
    method: Optional[str] = typer.Option(None, "--method", help="stage III model: kmtr (default) | mae | resnet50 | "
                                         "resnet50_u | resnet50_k | unet | unet_u | nnunet | nnunet_u (nnU-Net, "
                                         "the nnunet extra)"),
    preset: str = typer.Option("tiny", "--preset", help="paper | tiny"),
    data: Optional[str] = typer.Option(None, "--data", help=f"store path, fsspec URL or Croissant manifest (default {DEFAULT_DEMO_STORE} when present)"),
    model: Optional[str] = typer.Option(None, "--model", help="stage I: image | kspace | both"),
    init: Optional[str] = typer.Option(None, "--init", help="checkpoint or run to start stage II/III from (default: "
                                       "the previous stage of this experiment; stage III also takes another task's "
                                       "k-MTR run; 'scratch' = random initialisation)"),
    diseases: Optional[str] = typer.Option(None, "--diseases", help="classification labels, comma-separated, or all"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    lr: Optional[float] = typer.Option(None, "--lr", help="learning rate of every model trained"),
    lr_image: Optional[float] = typer.Option(None, "--lr-image"),
    lr_kspace: Optional[float] = typer.Option(None, "--lr-kspace"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    frames: Optional[int] = typer.Option(None, "--frames", help="frames kept out of T (evenly spaced)"),
    mask: Optional[str] = typer.Option(None, "--mask", help="masks/<name> of the store, e.g. vista_r4"),
    patch: Optional[str] = typer.Option(None, "--patch", help="t,h,w e.g. 5,16,16"),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader workers"),
    name: Optional[str] = typer.Option(None, "--name", help="experiment name: runs/<name>/<stage>/"),
    out: Optional[str] = typer.Option(None, "--out", help="folder holding runs (default runs)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda"),
    grad_checkpoint: Optional[bool] = typer.Option(None, "--grad-checkpoint/--no-grad-checkpoint"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in the folder from its last.pt even if "
                                "the config differs (e.g. more epochs)"),
    restart: bool = typer.Option(False, "--restart", help="delete the run in the folder and train from scratch"),
    set_: list[str] = typer.Option([], "--set", help="any config key, e.g. --set arch.width=128 (repeatable)"),
) -> None:
    """Train k-MTR: stage I (MAEs), II (alignment), III (tasks), or all in sequence. Works under torchrun.

    A run folder (runs/<name>/<stage>) that holds a checkpoint is never overwritten silently: when
    its saved config matches the requested one the run continues from last.pt (a finished run
    trains nothing); otherwise the command stops, naming the differences. "Matches" ignores the
    bookkeeping settings (--name/--out, --device, --workers, --max-steps, --grad-checkpoint,
    run.progress/tensorboard/log_every/ckpt_every_steps/png_every_epochs, data.cache,
    optim.chunk_size) and how local paths are spelt. --resume continues it with the new config,
    --restart deletes it and starts over.
    """
    import torch

    from kmtr.methods import METHODS
    from kmtr.pipeline import stage_config, train_one, train_pipeline
    from kmtr.store import StoreError
    from kmtr.tasks import TASKS
    from kmtr.train.loop import NonFiniteLossError
    from kmtr.train.runner import ConfigError

    if resume and restart:
        _fail("--resume and --restart exclude each other")
    data = _data_or_demo(data)
    bad = [t for t in task if t not in TASKS]
    if bad:
        _fail(f"unknown task {bad[0]!r}; choose from {', '.join(TASKS)}")
    overrides = {
        "models": model, "method": method, "init": init, "heads.diseases": diseases, "data.data": data,
        "optim.epochs": epochs, "data.batch_size": batch_size, "data.frames": frames, "data.mask": mask,
        "arch.patch": patch, "data.num_workers": workers, "run.name": name, "run.out_dir": out, "run.device": device,
        "arch.grad_checkpoint": grad_checkpoint, "run.max_steps": max_steps, "optim.lr": lr,
        "optim.lr_image": lr if lr_image is None else lr_image, "optim.lr_kspace": lr if lr_kspace is None else lr_kspace,
    }
    overrides.update(_set_overrides(set_))
    _check_device(overrides.get("run.device"))
    if method is not None and method not in METHODS:
        _fail(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    tasks = list(task) or list(METHODS[method or "kmtr"].tasks)
    require = METHODS[method].require if method is not None else None
    if require is not None:  # optional dependencies (the nnunet extra)
        from kmtr.nnunet import NnUNetMissing

        try:
            require(method)
        except NnUNetMissing as exc:
            _fail(str(exc))
    mode = "resume" if resume else ("restart" if restart else "auto")
    try:
        if stage is None:
            summaries = train_pipeline(preset, (1, 2, 3), tasks, overrides, resume=mode)
        elif stage == 3:
            summaries = [train_one(stage_config(preset, 3, t, overrides), resume=mode) for t in tasks]
        else:
            summaries = [train_one(stage_config(preset, stage, "", overrides), resume=mode)]
    except (StoreError, ConfigError, ValueError) as exc:
        _fail(str(exc))
    except NonFiniteLossError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3)
    except torch.OutOfMemoryError as exc:
        _fail(f"out of device memory ({str(exc).splitlines()[0]}); the finished stages and the last checkpoint "
              "are kept: rerun with a smaller --batch-size or with --grad-checkpoint (benchmarks/bench_stages.py "
              "measures each stage's peak memory)")
    for summary in summaries:
        if summary.get("already_trained"):
            typer.echo(f"done: already trained ({summary['global_step']} steps), run {summary['run_dir']}")
            continue
        loss = summary["last"].get("loss", float("nan"))
        typer.echo(f"done: {summary['global_step']} steps, loss {loss:.4g}, run {summary['run_dir']}")


@app.command("eval")
def eval_(
    run: str = typer.Argument(..., help="experiment folder (runs/<name>), one stage-III run folder, or the --out "
                              "folder of `kmtr train` when it holds one experiment"),
    split: str = typer.Option("test", "--split"),
    out: Optional[str] = typer.Option(None, "--out", help="report folder (default <experiment>/report)"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
    n_boot: int = typer.Option(1000, "--n-boot", help="bootstrap resamples for the 95 % intervals"),
    limit: Optional[int] = typer.Option(None, "--limit", help="evaluate at most this many subjects per split"),
    data: Optional[str] = typer.Option(None, "--data", help="store to evaluate on (default: the run's own)"),
) -> None:
    """Evaluate trained stage-III runs on the test split: Markdown report, CSVs and figures."""
    from pathlib import Path

    from kmtr.eval.predict import find_experiment
    from kmtr.eval.report import evaluate_experiment
    from kmtr.store import StoreError

    if not Path(run).exists():
        _fail(f"no run folder at {run}")
    _check_device(device)
    try:
        report = evaluate_experiment(find_experiment(run), split, out, device, n_boot, limit=limit, data=data)
    except (FileNotFoundError, StoreError, ValueError) as exc:
        _fail(str(exc))
    typer.echo((report / "report.md").read_text())
    typer.echo(f"report: {report / 'report.md'}")


@app.command()
def benchmark(
    task: list[str] = typer.Option([], "--task", help="regression | classification | segmentation | reconstruction "
                                   "(repeatable; default regression and classification)"),
    acc: list[float] = typer.Option([4.0], "--acc", help="acceleration(s) R; masks <pattern>_r<R> must be in the store "
                                    "(add them with `kspace-sim add-mask`)"),
    pattern: str = typer.Option("vista", "--pattern", help="mask pattern of the store's masks/<pattern>_r<R>"),
    method: list[str] = typer.Option([], "--method", help="methods to compare (repeatable; default all that do the task)"),
    preset: str = typer.Option("tiny", "--preset", help="paper | tiny"),
    data: Optional[str] = typer.Option(None, "--data", help=f"store (default {DEFAULT_DEMO_STORE})"),
    name: str = typer.Option("benchmark", "--name", help="runs/<name>/<mask>/… and runs/<name>/report"),
    out: str = typer.Option("runs", "--out"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    n_boot: int = typer.Option(1000, "--n-boot"),
    phenotype: str = typer.Option("LVEF (%)", "--phenotype", help="phenotype plotted against R"),
    disease: Optional[str] = typer.Option(
        None, "--disease", help="disease plotted against R (default the first with both classes in the test split)"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    lr_search: int = typer.Option(0, "--lr-search", help="learning rates tried per method and task on the validation "
                                  "split before its full run, the same for every method (0 = off; at most 5)"),
    lr_search_epochs: Optional[int] = typer.Option(None, "--lr-search-epochs",
                                                   help="epochs per try (default a quarter of the task's epochs)"),
    set_: list[str] = typer.Option([], "--set", help="any config key for every run, e.g. --set data.frames=5"),
) -> None:
    """Train (what is missing) and compare k-MTR with the baselines: what each method is, its recipe, tables,
    paired tests, metric vs R."""
    import torch

    from kmtr.eval.benchmark import DEFAULT_METHODS, methods_per_task, run_benchmark
    from kmtr.methods import METHODS
    from kmtr.store import StoreError
    from kmtr.train.loop import NonFiniteLossError
    from kmtr.train.runner import ConfigError

    data = _data_or_demo(data)
    tasks = list(task) or ["regression", "classification"]
    bad_tasks = [t for t in tasks if t not in DEFAULT_METHODS]
    if bad_tasks:
        _fail(f"unknown task {bad_tasks[0]!r}; choose from {', '.join(DEFAULT_METHODS)}")
    bad = [m for m in method if m not in METHODS]
    if bad:
        _fail(f"unknown method {bad[0]!r}; choose from {', '.join(METHODS)}")
    try:
        methods = methods_per_task(tasks, method) if method else None
    except ConfigError as exc:
        _fail(str(exc))
    overrides: dict[str, object] = {"data.data": data, "optim.epochs": epochs, **_set_overrides(set_)}
    _check_device(device)
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    try:
        report = run_benchmark(preset, tasks, acc, pattern, methods, overrides, name, out, dev, n_boot,
                               phenotype=phenotype, disease=disease, lr_search=lr_search,
                               lr_search_epochs=lr_search_epochs)
    except (StoreError, ConfigError, ValueError) as exc:
        _fail(str(exc))
    except NonFiniteLossError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3)
    typer.echo((report / "benchmark.md").read_text())
    typer.echo(f"report: {report / 'benchmark.md'}")


@app.command()
def info(data: str = typer.Argument(..., help="store path, fsspec URL or Croissant manifest")) -> None:
    """Print a store's shape, masks and per-split counts of done subjects."""
    from kmtr.store import SPLIT_CODES, STATUS_DONE, StoreError, open_store, read_store_info

    try:
        si = read_store_info(open_store(data), data)
    except StoreError as exc:
        _fail(str(exc))
    typer.echo(f"{si.url}: N={si.n} S={si.s} T={si.t} H={si.h} W={si.w}; masks: {', '.join(si.masks) or '-'}")
    if si.coils is None:
        typer.echo(f"  format {si.format_version}: single-coil")
    else:
        typer.echo(f"  format {si.format_version}: {si.coils.summary()}; coil k-space synthesised on the fly "
                   f"(tokens 2 x {si.coils.n_coils} channels), images SENSE-1 with the true maps")
    for split, code in SPLIT_CODES.items():
        done = int(((si.status == STATUS_DONE) & (si.split == code)).sum())
        typer.echo(f"  {split}: {done} done")


def main() -> None:
    """Console-script entry point (``kmtr``)."""
    app(sys.argv[1:])


if __name__ == "__main__":
    main()
