import numpy as np
import pytest

from kspace_sim.masks import achieved_acceleration, acs_lines_mask, available_patterns, make_mask, mask_name, parse_mask_name
from kspace_sim.masks.cartesian import default_acs_lines


@pytest.mark.parametrize("pattern", ["gaussian", "equispaced", "uniform"])
@pytest.mark.parametrize("r", [2, 3, 4, 8, 16, 5.5])
def test_exact_lines_and_acceleration(pattern, r):
    m = make_mask(pattern, 3, 50, 128, r, seed=7)
    n = round(128 / r)
    assert m.shape == (3, 50, 128) and m.dtype == bool
    assert (m.sum(-1) == n).all()
    assert achieved_acceleration(m) == pytest.approx(128 / n, abs=0)


@pytest.mark.parametrize("pattern", ["gaussian", "equispaced"])
def test_acs_lines_sampled_everywhere_and_r_without_acs(pattern):
    r = 4
    m = make_mask(pattern, 2, 50, 128, r, seed=1)
    acs = acs_lines_mask(pattern, 128, r)
    assert acs.sum() == default_acs_lines(128, r) == 10
    assert m[..., acs].all()
    n = 32
    expected = (128 - 10) / (n - 10)
    assert achieved_acceleration(m, exclude_lines=acs) == pytest.approx(expected)


def test_determinism_and_seed_dependence():
    a = make_mask("gaussian", 2, 20, 64, 4, seed=3)
    b = make_mask("gaussian", 2, 20, 64, 4, seed=3)
    c = make_mask("gaussian", 2, 20, 64, 4, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])  # per-slice seeds differ


def test_gaussian_density_higher_at_centre():
    m = make_mask("gaussian", 1, 400, 128, 4, seed=0, acs_lines=0)[0].mean(0)
    assert m[54:74].mean() > 2 * np.r_[m[:20], m[-20:]].mean()


def test_equispaced_interleaves_frames():
    m = make_mask("equispaced", 1, 8, 128, 4, seed=0)[0]
    assert not np.array_equal(m[0], m[1])


@pytest.mark.parametrize(
    "args,msg",
    [(("gaussian", 0.5), "R must be >= 1"), (("gaussian", 200), "exceeds"), (("nope", 4), "unknown mask pattern")],
)
def test_bad_requests(args, msg):
    with pytest.raises(ValueError, match=msg):
        make_mask(args[0], 1, 10, 128, args[1], seed=0)


def test_names_and_registry():
    assert mask_name("vista", 4) == "vista_r4" and mask_name("gaussian", 2.5) == "gaussian_r2.5"
    assert parse_mask_name("vista_r4") == ("vista", 4.0)
    assert {"gaussian", "equispaced", "uniform"} <= set(available_patterns())


def test_mask_bank_draws_shifted_bank_members():
    from kspace_sim.masks import mask_bank

    bank = mask_bank("gaussian", 4, 20, 64, 4, seed=9)
    assert bank.shape == (4, 20, 64)
    m = make_mask("gaussian", 6, 20, 64, 4, seed=1, bank=bank)
    for s in range(6):
        assert any(np.array_equal(m[s], np.roll(bank[j], k, axis=0)) for j in range(4) for k in range(20))
    np.testing.assert_array_equal(m, make_mask("gaussian", 6, 20, 64, 4, seed=1, bank=bank))
    assert not np.array_equal(m, make_mask("gaussian", 6, 20, 64, 4, seed=2, bank=bank))
    with pytest.raises(ValueError, match="bank has shape"):
        make_mask("gaussian", 1, 10, 64, 4, seed=0, bank=bank)
