"""Mask metrics, the sigpy Poisson-disc pattern, sigpy FFT equality and the `masks` CLI."""

from __future__ import annotations

import numpy as np
import pytest

from kspace_sim.fft import fft2c, ifft2c
from kspace_sim.masks import available_patterns, get_pattern
from kspace_sim.masks.quality import mask_quality, max_run


def test_max_run_plain_and_periodic():
    x = np.array([[1, 1, 0, 0, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0], [1] * 8], dtype=bool)
    assert max_run(x).tolist() == [2, 0, 8]
    assert max_run(x, periodic=True).tolist() == [4, 0, 8]


def test_metrics_of_a_hand_made_mask():
    m = np.zeros((4, 8), dtype=bool)
    m[:, 4] = True  # a fully sampled (ACS-like) line
    m[0, 0] = m[1, 2] = m[2, 6] = m[3, 0] = True
    q = mask_quality(m)
    assert q.frames == 4 and q.lines == 8
    assert q.acceleration == pytest.approx(32 / 8)
    assert q.fully_sampled_lines == 1 and q.acceleration_without_full == pytest.approx(28 / 4)
    assert (q.lines_min, q.lines_max) == (2, 2)
    assert q.max_gap_k == 4  # frame 2 samples lines 4 and 6 only: lines 0..3 unsampled
    assert q.max_gap_t == 4  # lines never sampled -> all T frames
    assert q.unsampled_fraction == pytest.approx(4 / 8)  # lines 1, 3, 5, 7
    psf = np.abs(np.fft.fft2(m.astype(float)))
    assert q.psf_sidelobe == pytest.approx(np.sort(psf.ravel())[-2] / psf[0, 0])


def test_gap_in_t_is_periodic():
    m = np.zeros((6, 4), dtype=bool)
    m[:, :3] = True
    m[[0, 5], 3] = True  # line 3 missing in frames 1..4 -> gap 4
    assert mask_quality(m).max_gap_t == 4
    m[[2], 3] = True
    assert mask_quality(m).max_gap_t == 2


def test_rejects_non_bool():
    with pytest.raises(ValueError):
        mask_quality(np.zeros((3, 4)))


def test_every_registered_pattern_has_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("KSPACE_SIM_CACHE", str(tmp_path))
    options = {"vista": {"iterations": 20, "cache": False}}
    for name in available_patterns():
        m = get_pattern(name)(8, 32, 4, 0, **options.get(name, {}))
        q = mask_quality(m)
        assert 1 < q.acceleration < 8 and 0 <= q.psf_sidelobe <= 1


@pytest.mark.parametrize("r", [4, 8])
def test_poisson_pattern(r):
    from kspace_sim.masks.poisson import poisson_mask

    T, W = 50, 128
    m = poisson_mask(T, W, r, 11)
    q = mask_quality(m)
    assert m.shape == (T, W) and m.dtype == bool
    # as close to the requested R as the sampler allows: within 1 % here
    assert abs(q.acceleration - r) / r < 0.01
    assert q.lines_min >= 1 and 0 < q.psf_sidelobe < 1
    assert np.array_equal(m, poisson_mask(T, W, r, 11))
    assert not np.array_equal(m, poisson_mask(T, W, r, 12))
    d = m.mean(axis=0)
    k = np.abs(np.arange(W) - W // 2)
    assert d[k < 8].mean() > 2 * d[k > 48].mean()


def test_poisson_bad_input():
    from kspace_sim.masks.poisson import poisson_mask

    for args in [(50, 128, 1.0, 0), (50, 128, 200, 0), (1, 128, 4, 0), (50, 128, 4, -1)]:
        with pytest.raises(ValueError):
            poisson_mask(*args)


@pytest.mark.parametrize("shape", [(8, 12), (6, 10), (5, 7), (9, 8), (2, 3, 16, 16), (4, 7, 9)])
def test_fft_equals_sigpy(shape):
    sp = pytest.importorskip("sigpy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    np.testing.assert_allclose(fft2c(x), sp.fft(x, axes=(-2, -1)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ifft2c(x), sp.ifft(x, axes=(-2, -1)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ifft2c(fft2c(x)), x, atol=1e-12)


def test_cli_masks_show_and_list(tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from cli.masks_cmd import register

    monkeypatch.setenv("KSPACE_SIM_CACHE", str(tmp_path / "cache"))
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # keep `masks` a sub-command
        pass

    register(app)
    runner = CliRunner()
    res = runner.invoke(app, ["masks", "list"])
    assert res.exit_code == 0 and "vista" in res.output and "poisson" in res.output
    out = tmp_path / "m.png"
    res = runner.invoke(
        app,
        ["masks", "show", "--pattern", "vista", "--acc", "4", "--frames", "8", "--lines", "32", "--out", str(out),
         "-o", "iterations=20"],
    )
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "achieved R" in res.output and "4.0000" in res.output
    res = runner.invoke(app, ["masks", "show", "--pattern", "vista", "--acc", "1", "--out", str(out)])
    assert res.exit_code == 2
