import numpy as np
import pytest

from kspace_sim.sources.subject import SubjectError
from kspace_sim.views import VIEW_ORDER, _crop, extract_views, resample_frames, select_sax_slices
from synthetic_subjects import make_subject


def test_sax_selection_rule():
    seg = np.zeros((4, 4, 12, 3), dtype=np.uint8)
    seg[1, 1, 2:9, 0] = 1
    np.testing.assert_array_equal(select_sax_slices(seg, 12), np.arange(4, 10))  # first LV slice 2, + 2
    seg[:] = 0
    seg[1, 1, 8:, 0] = 1
    np.testing.assert_array_equal(select_sax_slices(seg, 12), np.arange(6, 12))  # shifted inside the stack
    np.testing.assert_array_equal(select_sax_slices(None, 11), np.arange(2, 8))
    with pytest.raises(SubjectError, match="only 5 short-axis"):
        select_sax_slices(None, 5)
    with pytest.raises(SubjectError, match="no LV blood pool"):
        select_sax_slices(np.zeros((4, 4, 8, 2), dtype=np.uint8), 8)


def test_resample_frames_periodic():
    t = np.arange(25)
    x = np.sin(2 * np.pi * t / 25)[None, :].astype(np.float32)
    y = resample_frames(x, 50)
    np.testing.assert_allclose(y[0, ::2], x[0], atol=1e-6)
    np.testing.assert_allclose(y[0], np.sin(2 * np.pi * np.arange(50) / 50), atol=0.02)
    lab = np.arange(10)[None, :]
    assert set(resample_frames(lab, 20, labels=True)[0]) <= set(range(10))
    assert resample_frames(x, 25) is x


def test_crop_pads_outside():
    img = np.arange(20 * 20 * 2, dtype=np.float32).reshape(20, 20, 2)
    out, box = _crop(img, (2.0, 18.0), 8)
    assert out.shape == (2, 8, 8)
    np.testing.assert_array_equal(box, [-2, 14, 6, 22])
    assert (out[:, :2] == 0).all() and (out[:, :, -2:] == 0).all()
    np.testing.assert_array_equal(out[:, 2:, :6], np.moveaxis(img[0:6, 14:20], -1, 0))


def test_extract_views_shapes_labels_and_range():
    vol = make_subject("42", n_frames=12)
    v = extract_views(vol, crop=32, n_frames=10)
    assert v.images.shape == (len(VIEW_ORDER), 10, 32, 32) and v.images.dtype == np.float32
    assert 0.0 <= v.images.min() and v.images.max() <= 1.0
    assert v.source_frames == 12
    assert list(v.seg_present) == [True] * 6 + [True, False, True]
    assert set(np.unique(v.seg[6])) == {0, 4}  # 2ch: LA only
    assert set(np.unique(v.seg[8])) == {0, 4, 5}  # 4ch: LA, RA
    assert set(np.unique(v.seg[:6])) <= {0, 1, 2, 3}
    # crop centred on the ventricles: LV blood pool near the centre of the short-axis crop
    lv = np.argwhere(v.seg[2, 0] == 1).mean(0)
    assert np.all(np.abs(lv - 16) < 8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_upper_percentile_equals_numpy_bit_for_bit(dtype):
    from kspace_sim.views import upper_percentile

    rng = np.random.default_rng(5)
    for n in (1, 2, 7, 33, 1000, 123_457):
        for values in (rng.standard_normal(n) * 1000, rng.integers(0, 40, n)):  # continuous, heavy ties
            x = values.astype(dtype)
            for q in (99.9, 99.99, 99.5, 50.0, 0.0, 100.0):
                assert upper_percentile(x, q) == float(np.percentile(x, q)), (dtype, n, q)
    stack = np.moveaxis(rng.integers(0, 4000, (3, 6, 16, 16)).astype(np.float32), 1, -1)  # not contiguous
    assert upper_percentile(stack, 99.9) == float(np.percentile(stack, 99.9))
