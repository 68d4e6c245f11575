"""The segmentation loss: Dice + cross-entropy over each labelled view, or its Dice term per 2-D frame
(``heads.seg_dice_frames``, the unit the evaluation's Dice averages)."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, DiceLoss

from kmtr.config import TaskConfig
from kmtr.tasks.segmentation import NUM_CLASSES, Segmentation, dice_samples

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
        losses[frames] = task.loss(model, out, batch)
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
