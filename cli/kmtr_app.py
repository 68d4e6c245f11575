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


@app.command()
def train(
    stage: int = typer.Option(1, "--stage", help="training stage (1 = MAEs)"),
    preset: str = typer.Option("tiny", "--preset", help="paper | tiny"),
    data: Optional[str] = typer.Option(None, "--data", help=f"store path, fsspec URL or Croissant manifest (default {DEFAULT_DEMO_STORE} when present)"),
    model: Optional[str] = typer.Option(None, "--model", help="image | kspace | both"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    lr: Optional[float] = typer.Option(None, "--lr", help="learning rate of every model trained"),
    lr_image: Optional[float] = typer.Option(None, "--lr-image"),
    lr_kspace: Optional[float] = typer.Option(None, "--lr-kspace"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    frames: Optional[int] = typer.Option(None, "--frames", help="frames kept out of T (evenly spaced)"),
    mask: Optional[str] = typer.Option(None, "--mask", help="masks/<name> of the store, e.g. vista_r4"),
    patch: Optional[str] = typer.Option(None, "--patch", help="t,h,w e.g. 5,16,16"),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader workers"),
    name: Optional[str] = typer.Option(None, "--name", help="run name: runs/<name>/"),
    out: Optional[str] = typer.Option(None, "--out", help="folder holding runs (default runs)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda"),
    grad_checkpoint: Optional[bool] = typer.Option(None, "--grad-checkpoint/--no-grad-checkpoint"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    resume: bool = typer.Option(False, "--resume", help="continue from runs/<name>/last.pt"),
    set_: list[str] = typer.Option([], "--set", help="any config key, e.g. --set arch.width=128 (repeatable)"),
) -> None:
    """Train (stage I: image and/or k-space MAE). Works under torchrun for several processes."""
    from kmtr.config import apply_overrides
    from kmtr.config import preset as make_preset
    from kmtr.store import StoreError
    from kmtr.train.loop import NonFiniteLossError
    from kmtr.train.stage1 import ConfigError, train_stage1

    if data is None:
        from pathlib import Path

        if not Path(DEFAULT_DEMO_STORE).exists():
            _fail(f"no --data given and no demo store at {DEFAULT_DEMO_STORE} (run `kspace-sim build --acc 4` first)")
        data = DEFAULT_DEMO_STORE
    try:
        cfg = make_preset(preset)
        overrides = {
            "stage": stage, "models": model, "data.data": data, "optim.epochs": epochs, "data.batch_size": batch_size,
            "data.frames": frames, "data.mask": mask, "arch.patch": patch, "data.num_workers": workers,
            "run.name": name, "run.out_dir": out, "run.device": device, "arch.grad_checkpoint": grad_checkpoint,
            "run.max_steps": max_steps, "optim.lr_image": lr if lr_image is None else lr_image,
            "optim.lr_kspace": lr if lr_kspace is None else lr_kspace,
        }
        for item in set_:
            key, sep, value = item.partition("=")
            if not sep:
                _fail(f"--set expects KEY=VALUE, got {item!r}")
            overrides[key.strip()] = value
        apply_overrides(cfg, overrides)
        summary = train_stage1(cfg, resume=resume)
    except (StoreError, ConfigError, ValueError) as exc:
        _fail(str(exc))
    except NonFiniteLossError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3)
    last = summary["last"]
    loss = last.get("loss", float("nan"))
    typer.echo(f"done: {summary['global_step']} steps, loss {loss:.4g}, run {summary['run_dir']}")


@app.command()
def info(data: str = typer.Argument(..., help="store path, fsspec URL or Croissant manifest")) -> None:
    """Print a store's shape, masks and per-split counts of done subjects."""
    from kmtr.store import SPLIT_CODES, STATUS_DONE, StoreError, open_store, read_store_info

    try:
        si = read_store_info(open_store(data), data)
    except StoreError as exc:
        _fail(str(exc))
    typer.echo(f"{si.url}: N={si.n} S={si.s} T={si.t} H={si.h} W={si.w}; masks: {', '.join(si.masks) or '-'}")
    for split, code in SPLIT_CODES.items():
        done = int(((si.status == STATUS_DONE) & (si.split == code)).sum())
        typer.echo(f"  {split}: {done} done")


def main() -> None:
    """Console-script entry point (``kmtr``)."""
    app(sys.argv[1:])


if __name__ == "__main__":
    main()
