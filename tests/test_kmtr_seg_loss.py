"""The segmentation loss: Dice + cross-entropy over each labelled view, or its Dice term per 2-D frame
(``heads.seg_dice_frames``, the unit the evaluation's Dice averages); and its predictions averaged
over the in-plane mirrorings (``heads.seg_tta``)."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss, DiceLoss

from kmtr.config import TaskConfig, preset
from kmtr.fft import fft2c, ifft2c
from kmtr.tasks.segmentation import MIRRORINGS, NUM_CLASSES, Segmentation, dice_samples, mirrored_batch
from kmtr.train.task_net import TaskModel

torch.set_num_threads(1)


def _square(frame: torch.Tensor, label: int, half: int, centre: int = 16) -> None:
    frame[centre - half:centre + half, centre - half:centre + half] = label


def test_dice_samples_lays_each_frame_out_as_its_own_sample() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, NUM_CLASSES, 5, 8, 8, generator=g)
    target = torch.randint(0, NUM_CLASSES, (3, 1, 5, 8, 8), generator=g)
    same = dice_samples(logits, target, frames=False)
    assert same[0] is logits and same[1] is target
    flat_logits, flat_target = dice_samples(logits, target, frames=True)
    assert flat_logits.shape == (15, NUM_CLASSES, 8, 8) and flat_target.shape == (15, 1, 8, 8)
    for view in range(3):
        for t in range(5):
            assert torch.equal(flat_logits[view * 5 + t], logits[view, :, t])
            assert torch.equal(flat_target[view * 5 + t], target[view, :, t])


def test_per_frame_dice_weighs_a_missed_small_structure_as_the_evaluation_does() -> None:
    """One view of two frames: a large LV (frame 0) found exactly, a small apical LV (frame 1) missed.
    Over the view the miss costs little Dice; per frame it costs half the LV's Dice, as the
    evaluation's per-frame mean counts it."""
    target = torch.zeros(1, 1, 2, 32, 32, dtype=torch.long)
    _square(target[0, 0, 0], 1, 10)  # 400 px
    _square(target[0, 0, 1], 1, 2)  # 16 px
    pred = target.clone()
    pred[0, 0, 1] = 0  # the small LV missed
    logits = 50.0 * torch.nn.functional.one_hot(pred[:, 0], NUM_CLASSES).permute(0, 4, 1, 2, 3).float()
    dice = DiceLoss(to_onehot_y=True, softmax=True, include_background=False, reduction="none")
    lv_view = dice(*dice_samples(logits, target, frames=False))[:, 0].mean()
    lv_frames = dice(*dice_samples(logits, target, frames=True))[:, 0].mean()
    assert lv_view < 0.03  # 1 - 2*400/(400+416)
    assert abs(lv_frames - 0.5) < 1e-3  # frame 0: 0, frame 1: 1


def test_segmentation_loss_follows_heads_seg_dice_frames_and_keeps_the_cross_entropy() -> None:
    g = torch.Generator().manual_seed(1)
    out = torch.randn(2, 3, NUM_CLASSES, 4, 16, 16, generator=g)  # (B, S, C, T, H, W)
    batch = {"seg": torch.randint(0, NUM_CLASSES, (2, 3, 4, 16, 16), generator=g),
             "seg_present": torch.tensor([[1, 0, 1], [1, 1, 0]])}
    task, losses = Segmentation(), {}
    for frames in (False, True):
        model = torch.nn.Module()
        task.register_targets(model, {}, TaskConfig(seg_dice_frames=frames))
        losses[frames] = task.loss(model, out[batch["seg_present"].bool()], batch)
    logits = out[batch["seg_present"].bool()]
    target = batch["seg"][batch["seg_present"].bool()][:, None]
    for frames, loss in losses.items():
        expected = DiceCELoss(to_onehot_y=True, softmax=True)(*dice_samples(logits, target, frames))
        assert torch.allclose(loss, expected)
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0])
    dice_view, dice_frames = (DiceLoss(to_onehot_y=True, softmax=True)(*dice_samples(logits, target, f))
                              for f in (False, True))
    assert torch.allclose(losses[False] - ce, dice_view) and torch.allclose(losses[True] - ce, dice_frames)
    assert not torch.allclose(dice_view, dice_frames)


# ---------------------------------------------------------------- test-time mirroring (heads.seg_tta)


def _undersampled_batch(seed: int = 0, coils: bool = False, width: int = 12
                        ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A batch (B=2, S=2, T=3, 16 × width) of masked k-space of random complex images, and the images."""
    g = torch.Generator().manual_seed(seed)
    image = torch.complex(torch.randn(2, 2, 3, 16, width, generator=g), torch.randn(2, 2, 3, 16, width, generator=g))
    mask = torch.rand(2, 2, 3, width, generator=g) > 0.5
    batch = {"kspace": fft2c(image) * mask[..., None, :], "mask": mask}
    if coils:
        batch["maps"] = torch.randn(2, 4, 2, 16, width, generator=g)
    return batch, image


@pytest.mark.parametrize("width", [12, 11])  # an odd length mirrors k-space without the roll (kmtr.augment)
@pytest.mark.parametrize("dims", MIRRORINGS[1:])
def test_mirrored_batch_is_the_mirrored_images_sampled_by_the_mirrored_pattern(dims: tuple[int, ...],
                                                                               width: int) -> None:
    batch, image = _undersampled_batch(coils=True, width=width)
    out = mirrored_batch(batch, dims)
    mask = out["mask"]
    assert torch.equal(mask, batch["mask"]) == (-1 not in dims)
    assert mask.sum() == batch["mask"].sum()
    expected = fft2c(image.flip(dims)) * mask[..., None, :]
    assert torch.allclose(out["kspace"], expected, atol=1e-5)
    assert torch.equal(out["maps"], batch["maps"].flip(dims))
    assert torch.equal(batch["kspace"], _undersampled_batch(coils=True, width=width)[0]["kspace"])  # input kept


class _Unsymmetric(torch.nn.Module):
    """A network: logits (B, S, C, T, H, W) from the zero-filled image through a fixed random,
    non-symmetric convolution."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = torch.nn.Conv2d(2, NUM_CLASSES, 5, padding=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = ifft2c(kspace)  # (B, S, T, H, W)
        planes = torch.stack([x.real, x.imag], dim=3).flatten(0, 2)  # (B·S·T, 2, H, W)
        b, s, t = x.shape[:3]
        return self.conv(planes).unflatten(0, (b, s, t)).permute(0, 1, 3, 2, 4, 5)


@pytest.mark.parametrize("tta", [False, True])
def test_segmentation_tta_predicts_the_mirrored_image_as_the_mirrored_prediction(tta: bool) -> None:
    """With the four mirrorings averaged the prediction commutes with every mirroring (they form a
    group); the network alone does not. ``TaskModel.predict`` (what evaluation calls) labels the
    averaged probabilities."""
    batch, _ = _undersampled_batch(seed=1)
    task = Segmentation()
    model = TaskModel(_Unsymmetric(), task, {}, TaskConfig(seg_tta=tta))
    out = task.prediction_outputs(model, batch)
    assert out.shape == (2, 2, NUM_CLASSES, 3, 16, 12)
    if tta:
        assert torch.allclose(out.sum(dim=2), torch.ones(()), atol=1e-5)  # averaged probabilities
    else:
        assert torch.equal(out, model.outputs(batch))  # the logits themselves
    assert torch.equal(model.predict(batch), out.argmax(dim=2).to(torch.uint8))
    assert tta == (not torch.equal(model.predict(batch), model.outputs(batch).argmax(dim=2).to(torch.uint8)))
    for dims in MIRRORINGS[1:]:
        mirrored = task.prediction_outputs(model, mirrored_batch(batch, dims))
        assert torch.allclose(mirrored, out.flip(dims), atol=1e-4) == tta, dims


def test_segmentation_tta_is_the_mean_of_the_four_mirrored_probability_maps() -> None:
    """The in-place sum (no stack of four maps) gives the mean of the mirrored-back softmaxes, bit for bit."""
    batch, _ = _undersampled_batch(seed=2)
    task = Segmentation()
    model = TaskModel(_Unsymmetric(), task, {}, TaskConfig(seg_tta=True))
    probs = [model.outputs(mirrored_batch(batch, dims)).softmax(dim=2).flip(dims) for dims in MIRRORINGS]
    assert torch.equal(task.prediction_outputs(model, batch), torch.stack(probs).mean(dim=0))


@pytest.mark.parametrize("method", ["kmtr", "unet_u"])
def test_training_decodes_only_the_labelled_views_with_the_loss_and_gradients_of_the_full_output(method: str
                                                                                                 ) -> None:
    """k-MTR's decoder decodes each view on its own: in training (and validation) it decodes only the views
    with a ground truth, the full output's ``[seg_present]``, and the loss and its gradients are those of the
    full output. A U-Net baseline gives its full output, as before."""
    from kmtr_fixtures import TINY_OVERRIDES

    from kmtr.methods import build_task_model
    from kmtr.pipeline import stage_config

    cfg = stage_config("tiny", 3, "segmentation", {**TINY_OVERRIDES, "init": "scratch", "method": method})
    model = build_task_model(cfg, (3, 5, 16, 16), (0, 0, 1), {"out_dim": NUM_CLASSES, "names": []})
    g = torch.Generator().manual_seed(4)
    image = torch.complex(torch.randn(2, 3, 5, 16, 16, generator=g), torch.randn(2, 3, 5, 16, 16, generator=g))
    batch = {"kspace": fft2c(image), "mask": torch.rand(2, 3, 5, 16, generator=g) < 0.5,
             "seg": torch.randint(0, NUM_CLASSES, (2, 3, 5, 16, 16), generator=g),
             "seg_present": torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.uint8)}
    task = model.task_def
    present = batch["seg_present"].bool()
    full = model.outputs(batch)
    out = task.training_outputs(model, batch)
    if method == "kmtr":
        assert out.shape == (4, NUM_CLASSES, 5, 16, 16)
        torch.testing.assert_close(out, full[present], rtol=1e-5, atol=1e-6)
    else:
        assert torch.equal(out, full[present])
    loss = model(batch)["loss"]
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    reference = task.loss(model, full[present], batch)  # the full output, indexed
    ref_grads = torch.autograd.grad(reference, list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    none = dict(batch, seg_present=torch.zeros(2, 3, dtype=torch.uint8))  # no labelled view in the batch
    assert model(none)["loss"].item() == 0.0


def test_tiny_preset_mirrors_every_segmentation_model_at_test_time_the_paper_preset_only_nnunet() -> None:
    tiny, paper = (preset(name, 3, "segmentation").heads for name in ("tiny", "paper"))
    assert tiny.seg_tta and tiny.nnunet_tta  # k-MTR, the MAE, the U-Nets and nnU-Net alike
    assert not paper.seg_tta and paper.nnunet_tta  # nnU-Net's default; the paper states none for k-MTR


def test_segmentation_predict_is_the_argmax_over_the_class_axis_first_maximum_on_ties() -> None:
    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, 3, NUM_CLASSES, 4, 8, 8, generator=g)
    out[0, 0, :, 0, 0, 0] = 1.0  # every class tied: the first (background) wins
    out[1, 2, 3:, 1, 2, 3] = 5.0  # classes 3-5 tied above the rest: 3 wins
    labels = Segmentation().predict(None, out)
    assert labels.dtype == torch.uint8 and labels.shape == (2, 3, 4, 8, 8)
    assert torch.equal(labels, out.argmax(dim=2).to(torch.uint8))
    assert labels[0, 0, 0, 0, 0] == 0 and labels[1, 2, 1, 2, 3] == 3
