"""Segmentation: scores vs hand counts, the loss, the datasets and their errors, the pretrained
encoder (loaded, frozen), and a small end-to-end run through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from aevision.cli import main
from aevision.config import DataConfig
from aevision.data import IGNORE_INDEX, load_dataset, load_segmentation
from aevision.data.batches import TensorBatches
from aevision.data.oxford_pet import trimap_to_mask
from aevision.errors import AevisionError, ConfigError, DataError
from aevision.models import build_model, save_model
from aevision.tasks.segmentation import (
    SegLoss,
    build_segment_config,
    load_segmenter,
    predict_masks,
    save_segmenter,
    segment,
    segmentation_metrics,
)
from aevision.tasks.segmentation.augment import SegAugment
from aevision.tasks.segmentation.config import AugmentConfig
from aevision.tasks.segmentation.model import encoder_from_autoencoder
from aevision.tasks.segmentation.train import make_segmenter, predict_set, score, segment_batches, validator

# --- scores -----------------------------------------------------------------------------------


def test_metrics_match_hand_computed_iou_dice_and_accuracy():
    # two 2x3 images, classes 0/1/2 (2 never occurs), one unknown pixel (255)
    truth = torch.tensor([[[0, 0, 1], [1, 1, 255]],
                          [[0, 0, 0], [1, 1, 1]]], dtype=torch.uint8)
    pred = torch.tensor([[[0, 1, 1], [1, 0, 0]],
                         [[0, 0, 0], [1, 1, 0]]], dtype=torch.uint8)
    m = segmentation_metrics(pred, truth, ["bg", "fg", "never"])
    # known pixels: 11. class 0: TP 4, FP 2 (pred 0 where truth 1), FN 1 (truth 0 where pred 1)
    # class 1: TP 4, FP 1, FN 2. The unknown pixel's prediction counts nowhere.
    iou0, iou1 = 4 / (4 + 2 + 1), 4 / (4 + 1 + 2)
    assert m["iou"]["bg"] == pytest.approx(iou0)
    assert m["iou"]["fg"] == pytest.approx(iou1)
    assert m["iou"]["never"] is None and m["dice"]["never"] is None  # absent: left out of the mean
    assert m["miou"] == pytest.approx((iou0 + iou1) / 2)
    assert m["dice"]["bg"] == pytest.approx(2 * 4 / (2 * 4 + 2 + 1))
    assert m["mean_dice"] == pytest.approx((8 / 11 + 8 / 11) / 2)
    assert m["pixel_accuracy"] == pytest.approx(8 / 11)
    assert m["pixels"] == 11


def test_a_class_predicted_but_absent_from_the_truth_scores_zero():
    truth = torch.zeros(1, 2, 2, dtype=torch.uint8)
    pred = torch.tensor([[[0, 0], [0, 2]]], dtype=torch.uint8)
    m = segmentation_metrics(pred, truth, ["bg", "a", "b"])
    assert m["iou"] == {"bg": pytest.approx(0.75), "a": None, "b": 0.0}
    assert m["miou"] == pytest.approx(0.375)


def test_loss_skips_unknown_pixels_and_weights_classes():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4), dtype=torch.uint8)
    target[0, 0, :] = IGNORE_INDEX
    loss = SegLoss(3)
    base = loss(logits, target)
    changed = logits.clone()
    changed[0, :, 0, :] = 100 * torch.randn(3, 4)  # scores of unknown pixels must not matter
    again = loss(changed, target)
    assert torch.allclose(base["loss"], again["loss"]) and torch.allclose(base["dice"], again["dice"])
    assert torch.allclose(base["loss"], base["ce"] + base["dice"])
    # a perfect prediction has ~zero loss
    perfect = 50 * torch.nn.functional.one_hot(torch.where(target == IGNORE_INDEX, 0, target).long(), 3)
    assert loss(perfect.permute(0, 3, 1, 2).float(), target)["loss"] < 0.01
    # class weights: with weight only on class 2, CE is class 2's mean CE
    w = SegLoss(3, class_weights=[0.0, 0.0, 1.0], dice_weight=0.0)(logits, target)["ce"]
    keep = target.long() == 2
    ce_px = torch.nn.functional.cross_entropy(logits, torch.where(keep, 2, 0).long(), reduction="none")
    assert w == pytest.approx(float(ce_px[keep].mean()), rel=1e-5)


# --- data ---------------------------------------------------------------------------------------


def test_shapes_seg_is_seeded_and_its_masks_match_the_images():
    opts = {"n_train": 30, "n_test": 10, "size": 24}
    a = load_segmentation(DataConfig(name="shapes-seg", options=opts, val_fraction=0.2), seed=0)
    b = load_segmentation(DataConfig(name="shapes-seg", options={**opts, "n_train": 50}), seed=1)
    assert a.train.classes == ["background", "circle", "square", "triangle"]
    assert len(a.train) == 24 and len(a.val) == 6 and a.test.masks.shape == (10, 24, 24)
    assert torch.equal(a.test.images, b.test.images)  # the test set never depends on n_train or seed
    assert int(a.train.masks.max()) <= 3 and (a.train.pixel_counts()[1:] > 0).all()
    # shape pixels are saturated colours, background is mid grey: masks follow the painted shapes
    sat = a.test.images.float().amax(1) - a.test.images.float().amin(1)
    fg = a.test.masks > 0
    assert sat[fg].mean() > sat[~fg].mean() + 40
    # the same images are a plain dataset for pretraining (no masks)
    plain = load_dataset(DataConfig(name="shapes-seg", options=opts, val_fraction=0.0), seed=0)
    assert plain.train.labels is None and torch.equal(plain.test.images, a.test.images)


def _segfolder(root, n=4, size=(10, 12), palette=False, classes=3):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.jpg")
        mask = rng.integers(0, classes, size, dtype=np.uint8)
        mask[0, 0] = 255
        img = Image.fromarray(mask)
        if palette:
            img.putpalette([10, 20, 30, 200, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 9))
        img.save(root / "masks" / f"im{i}.png")
    return root


@pytest.mark.parametrize("palette", [False, True])
def test_segfolder_reads_integer_and_palette_masks(tmp_path, palette):
    root = _segfolder(tmp_path / "d", palette=palette)
    (root / "classes.txt").write_text("sky\nroad\ncar\n")
    s = load_segmentation(DataConfig(name=f"segfolder:{root}", val_fraction=0.0,
                                     options={"test_fraction": 0.25}), 0)
    assert s.train.classes == ["sky", "road", "car"] and len(s.train) == 3 and len(s.test) == 1
    stem = s.train.files[0].rsplit("/", 1)[-1].split(".")[0]
    raw = np.asarray(Image.open(root / "masks" / f"{stem}.png"))
    assert np.array_equal(s.train.masks[0].numpy(), raw)  # palette index = class id, 255 kept
    if palette:
        assert s.train.palette[:2] == [(10, 20, 30), (200, 0, 0)]
    resized = load_segmentation(DataConfig(name=f"segfolder:{root}", image_size=[5, 6], val_fraction=0.0), 0)
    assert resized.train.masks.shape[1:] == (5, 6)
    assert set(resized.train.masks.unique().tolist()) <= {0, 1, 2, 255}


def test_segfolder_errors_name_the_file(tmp_path):
    root = _segfolder(tmp_path / "missing")
    (root / "masks" / "im2.png").unlink()
    with pytest.raises(DataError, match=r"no mask for images/im2\.jpg \(expected masks/im2\.png\)"):
        load_segmentation(DataConfig(name=f"segfolder:{root}"), 0)

    root = _segfolder(tmp_path / "size")
    Image.fromarray(np.zeros((10, 11), dtype=np.uint8)).save(root / "masks" / "im1.png")
    with pytest.raises(DataError, match=r"masks/im1\.png is 10x11 but images/im1\.jpg is 10x12"):
        load_segmentation(DataConfig(name=f"segfolder:{root}"), 0)

    root = _segfolder(tmp_path / "label")
    bad = np.zeros((10, 12), dtype=np.uint8)
    bad[3, 4] = 7
    Image.fromarray(bad).save(root / "masks" / "im3.png")
    with pytest.raises(DataError, match=r"im3\.png: label 7 at row 3, column 4 is not a class \(0\.\.2 from "
                                        r"data\.classes; 255 marks unknown pixels\)"):
        load_segmentation(DataConfig(name=f"segfolder:{root}", options={"classes": ["a", "b", "c"]}), 0)

    root = _segfolder(tmp_path / "rgb")
    Image.fromarray(np.zeros((10, 12, 3), dtype=np.uint8)).save(root / "masks" / "im0.png")
    with pytest.raises(DataError, match=r"im0\.png: mask has mode RGB"):
        load_segmentation(DataConfig(name=f"segfolder:{root}"), 0)

    with pytest.raises(DataError, match=r"no images/ folder"):
        load_segmentation(DataConfig(name=f"segfolder:{tmp_path}"), 0)
    with pytest.raises(DataError, match=r"needs a path"):
        load_segmentation(DataConfig(name="segfolder"), 0)


def test_masks_that_are_not_class_ids_are_refused_naming_a_file(tmp_path):
    """Binary 0/255 masks shrunk with smoothing hold every grey level (read as ~250 classes, the
    foreground ignored as unknown), and JPEG masks are never exact: both one-line errors."""
    root = _segfolder(tmp_path / "smooth", classes=2)
    for p in (root / "masks").iterdir():
        binary = (np.asarray(Image.open(p)) == 1).astype(np.uint8) * 255
        Image.fromarray(binary).resize((6, 5), Image.Resampling.BILINEAR).resize((12, 10)).save(p)
    with pytest.raises(DataError, match=r"masks/im\d\.png: mask values up to \d+ \(\d+ distinct in all "
                                        r"masks\) are grey levels, not class ids"):
        load_segmentation(DataConfig(name=f"segfolder:{root}"), 0)
    many = _segfolder(tmp_path / "many", classes=200)  # named, ids that high are real classes
    (many / "classes.txt").write_text("".join(f"c{i}\n" for i in range(200)))
    named = load_segmentation(DataConfig(name=f"segfolder:{many}", val_fraction=0.0), 0)
    assert named.train.masks.max() > 127

    root = _segfolder(tmp_path / "jpeg")
    (root / "masks" / "im1.png").rename(root / "masks" / "im1.jpg")
    with pytest.raises(DataError, match=r"masks/im1\.jpg: a JPEG mask: .* save masks as PNG"):
        load_segmentation(DataConfig(name=f"segfolder:{root}"), 0)


def test_every_split_of_a_segfolder_keeps_the_files_skipped_while_loading(tmp_path):
    root = _segfolder(tmp_path / "d", n=6)
    (root / "images" / "im9.jpg").write_bytes(b"not an image")
    (root / "masks" / "im9.png").write_bytes((root / "masks" / "im0.png").read_bytes())
    s = load_segmentation(DataConfig(name=f"segfolder:{root}", val_fraction=0.25), 0)
    assert s.val is not None and s.test is not None
    for part in (s.train, s.val, s.test, s.train.as_imageset()):  # summary.json lists train's
        assert [k.path for k in part.skipped] == [str(root / "images" / "im9.jpg")]


def test_penn_fudan_instance_masks_become_person(tmp_path):
    folder = tmp_path / "PennFudanPed"
    (folder / "PNGImages").mkdir(parents=True)
    (folder / "PedMasks").mkdir()
    for i in range(6):
        Image.fromarray(np.full((40, 50, 3), 30 * i, dtype=np.uint8)).save(folder / "PNGImages" / f"P{i}.png")
        inst = np.zeros((40, 50), dtype=np.uint8)
        inst[5:35, 5:15], inst[10:30, 30:40] = 1, 2  # two pedestrians
        Image.fromarray(inst).save(folder / "PedMasks" / f"P{i}_mask.png")
    s = load_segmentation(DataConfig(name="penn-fudan", root=str(tmp_path), image_size=[20, 25],
                                     val_fraction=0.0, options={"n_test": 2}), 0)
    assert s.train.classes == ["background", "person"] and len(s.train) == 4 and len(s.test) == 2
    m = s.train.masks[0]
    assert m.shape == (20, 25) and m[10, 5] == 1 and m[10, 17] == 1 and m[1, 1] == 0 and m[10, 12] == 0
    with pytest.raises(DataError, match=r"PennFudanPed has no PNGImages/ and PedMasks/"):
        load_segmentation(DataConfig(name="penn-fudan", root=str(tmp_path / "nowhere")), 0)


def test_oxford_pet_trimap_border_is_unknown_and_offline_is_a_clear_error(tmp_path):
    trimap = np.array([[1, 2], [3, 1]])
    assert trimap_to_mask(trimap).tolist() == [[1, 0], [255, 1]]
    with pytest.raises(DataError, match=r"oxford-pet: dataset files not found under .*oxford-iiit-pet"):
        load_segmentation(DataConfig(name="oxford-pet", root=str(tmp_path), download=False), 0)


def test_batches_with_targets_stay_aligned_through_augmentation():
    # each image's mask is its own first channel, so any misalignment shows
    torch.manual_seed(0)
    images = torch.randint(0, 4, (20, 3, 8, 8), dtype=torch.uint8)
    masks = images[:, 0].clone()
    aug = SegAugment(AugmentConfig(hflip=True, vflip=True, rot90=True))
    batches = TensorBatches(images, 6, seed=3, targets=masks, transform=aug)
    seen = 0
    for x, y in batches.epoch(0):
        assert y.dtype == torch.uint8 and x.shape[0] == y.shape[0]
        assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), y)
        seen += len(y)
    assert seen == 20
    # zoomed crops: images are resampled bilinearly, masks by nearest neighbour, same window
    big = torch.zeros(8, 1, 32, 32, dtype=torch.uint8)
    big[:, :, :, 16:] = 200
    big[:, :, 16:, :8] = 100
    x, y = SegAugment(AugmentConfig(hflip=False, zoom=2.0))(big.float() / 255, big[:, 0].clone())
    assert set(y.unique().tolist()) <= {0, 100, 200}
    assert ((x[:, 0] * 255 - y.float()).abs() < 1).float().mean() > 0.9
    assert not torch.equal(y, big[:, 0])


def test_segmentation_shares_the_augment_config_and_refuses_what_it_cannot_do_to_masks():
    cfg = build_segment_config(base={"encoder": "ae", "augment": {"zoom": 1.5}})
    assert cfg.augment.hflip and cfg.augment.zoom == 1.5  # segmentation flips by default
    with pytest.raises(ConfigError, match=r"^augment\.shift: got 0\.1, expected 0\.0 \(off\)"):
        build_segment_config(base={"encoder": "ae", "augment": {"shift": 0.1}})
    with pytest.raises(ConfigError, match=r"^decoder\.stem_channels: got -1"):
        build_segment_config(base={"encoder": "ae", "decoder": {"stem_channels": -1}})


class _PairModel(torch.nn.Module):
    """Regresses a per-sample target; records the epochs the Trainer announces."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
        self.epochs: list[int] = []

    def on_train_epoch_start(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def forward(self, x, y):
        return {"loss": ((self.lin(x.flatten(1)).squeeze(1) - y.float()) ** 2).mean()}


def test_trainer_feeds_image_target_pairs_and_announces_every_epoch(tmp_path):
    from aevision.config import TrainConfig
    from aevision.engine import Trainer

    x = torch.randint(0, 256, (32, 1, 2, 2), dtype=torch.uint8)
    y = (x.float().flatten(1) / 255 @ torch.tensor([1.0, -2.0, 0.5, 3.0])).round().to(torch.int64)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05, progress=False, accelerator="cpu")
    model = _PairModel()
    fit = Trainer(cfg, tmp_path, seed=0).fit(model, TensorBatches(x, 8, targets=y),
                                             TensorBatches(x, 16, shuffle=False, targets=y))
    assert model.epochs == [0, 1, 2]
    assert fit.history[-1]["val_loss"] < fit.history[0]["val_loss"]
    resumed = _PairModel()
    cfg.epochs = 4
    Trainer(cfg, tmp_path, seed=0).fit(resumed, TensorBatches(x, 8, targets=y), None, resume=True)
    assert resumed.epochs == [3]  # a resumed run announces only the epochs it runs


# --- the segmenter and its encoder ---------------------------------------------------------------


def _autoencoder(tmp_path, channels=(3, 16, 16)):
    ae = build_model("conv", channels, {"channels": [8, 12], "code_dim": 10},
                     [{"name": "l1", "weight": 1e-3}])
    with torch.no_grad():
        for p in ae.parameters():
            p.add_(0.5)  # unmistakably not a fresh initialisation
    save_model(ae, tmp_path / "ae")
    return ae


def _tiny_splits(n_train=16):
    return load_segmentation(DataConfig(name="shapes-seg", val_fraction=0.0,
                                        options={"n_train": n_train, "n_test": 8, "size": 16}), 0)


def test_pretrained_encoder_weights_are_loaded_and_scratch_is_not(tmp_path):
    ae = _autoencoder(tmp_path)
    train = _tiny_splits().train
    pre = make_segmenter(build_segment_config(base={"encoder": str(tmp_path / "ae")}), ae, train)
    scratch = make_segmenter(build_segment_config(base={"encoder": str(tmp_path / "ae"), "init": "scratch"}),
                             ae, train)
    ae_state = {k: v for k, v in ae.encoder.state_dict().items() if not k.startswith("head.")}
    for name, value in pre.encoder.state_dict().items():
        assert torch.equal(value, ae_state[name])
        assert not torch.equal(value, scratch.encoder.state_dict()[name])
    assert set(pre.encoder.state_dict()) == set(ae_state)  # the code head is not kept
    x = torch.rand(2, 3, 16, 16)
    assert pre.logits(x).shape == (2, 4, 16, 16)
    assert pre.logits(torch.rand(1, 3, 20, 13)).shape == (1, 4, 20, 13)  # any size


def test_a_unet_autoencoder_brings_its_decoder_too(tmp_path):
    ae = build_model("unet", (3, 16, 16), {"channels": [8, 12]},
                     [{"name": "denoising", "noise": "blocks", "p": 0.3, "block": 4}])
    with torch.no_grad():
        for p in ae.parameters():
            p.add_(0.5)  # unmistakably not a fresh initialisation
    save_model(ae, tmp_path / "ae")
    train = _tiny_splits().train
    base = {"encoder": str(tmp_path / "ae")}
    pre = make_segmenter(build_segment_config(base=base), ae, train)
    scratch = make_segmenter(build_segment_config(base={**base, "init": "scratch"}), ae, train)
    unet = ae.decoder.unet.state_dict()
    assert set(pre.decoder.state_dict()) == set(unet)  # the same network: stem, every block
    for name, value in pre.decoder.state_dict().items():
        assert torch.equal(value, unet[name]), name
    fresh = dict(scratch.decoder.named_parameters())
    for name, value in pre.decoder.named_parameters():  # (batch-norm statistics start equal)
        assert not torch.equal(value, fresh[name]), name
    for name, value in pre.encoder.state_dict().items():
        assert torch.equal(value, ae.encoder.state_dict()[name]), name
    assert pre.logits(torch.rand(1, 3, 20, 13)).shape == (1, 4, 20, 13)  # any size
    # pretrained_decoder=false: the encoder's weights alone, the decoder of the same shape starts afresh
    enc_only = make_segmenter(build_segment_config(base={**base, "pretrained_decoder": False}), ae, train)
    assert not enc_only.decoder_pretrained and set(enc_only.decoder.state_dict()) == set(unet)
    assert not any(torch.equal(v, unet[k]) for k, v in enc_only.decoder.named_parameters())
    assert all(torch.equal(v, ae.encoder.state_dict()[k]) for k, v in enc_only.encoder.state_dict().items())
    # a decoder section that disagrees with the autoencoder's is a clear error, not a silent change
    with pytest.raises(ConfigError, match=r"decoder.stem_channels: got 8, expected 16 \(the 'unet'"):
        make_segmenter(build_segment_config(base={**base, "decoder": {"stem_channels": 8}}), ae, train)
    with pytest.raises(ConfigError, match=r"decoder.channels: got \[8, 8\], expected \[8, 12\]"):
        narrow = {**base, "init": "scratch", "decoder": {"channels": [8, 8]}}
        make_segmenter(build_segment_config(base=narrow), ae, train)
    # decoder widths of its own: the segmenter's default decoder is the model's, not the encoder's widths
    own = build_model("unet", (3, 16, 16), {"channels": [8, 12], "decoder_channels": [6, 10]})
    seg = make_segmenter(build_segment_config(base=base), own, train)
    assert seg.spec["decoder"]["channels"] == [6, 10]
    assert all(torch.equal(v, own.decoder.unet.state_dict()[k]) for k, v in seg.decoder.state_dict().items())


def test_dense_encoder_is_refused():
    ae = build_model("dense", (3, 16, 16), {"code_dim": 8})
    with pytest.raises(ConfigError, match=r"encoder: got 'dense', expected a convolutional architecture"):
        encoder_from_autoencoder(ae)


def test_encoder_is_frozen_for_freeze_epochs_then_fine_tuned(tmp_path):
    _autoencoder(tmp_path)
    splits = _tiny_splits()
    base = {"encoder": str(tmp_path / "ae"), "examples": 0,
            "train": {"epochs": 2, "batch_size": 8, "progress": False}}
    ae_enc = encoder_from_autoencoder(load_model_eval(tmp_path / "ae"))[0].state_dict()

    frozen = segment({**base, "freeze_epochs": 2, "output_dir": str(tmp_path / "f")}, data=splits)
    for k, v in frozen.segmenter.encoder.state_dict().items():
        assert torch.equal(v, ae_enc[k]), k
    decoder_moved = any(not torch.equal(a, b) for a, b in zip(
        frozen.segmenter.decoder.state_dict().values(),
        make_segmenter(build_segment_config(base=base), load_model_eval(tmp_path / "ae"),
                       splits.train).decoder.state_dict().values(), strict=True))
    assert decoder_moved

    tuned = segment({**base, "freeze_epochs": 1, "output_dir": str(tmp_path / "t")}, data=splits)
    assert any(not torch.equal(v, ae_enc[k]) for k, v in tuned.segmenter.encoder.state_dict().items())
    # the hook freezes exactly the first freeze_epochs epochs
    seg = tuned.segmenter
    seg.freeze_epochs = 1
    seg.train()
    seg.on_train_epoch_start(0)
    assert not any(p.requires_grad for p in seg.encoder.parameters()) and not seg.encoder.training
    seg.on_train_epoch_start(1)
    assert all(p.requires_grad for p in seg.encoder.parameters()) and seg.encoder.training


def test_freeze_decoder_holds_a_pretrained_decoder_and_pretrained_weights_get_their_own_lr(tmp_path):
    ae = build_model("unet", (3, 16, 16), {"channels": [8, 12]},
                     [{"name": "denoising", "noise": "blocks", "p": 0.3, "block": 4}])
    save_model(ae, tmp_path / "ae")
    splits = _tiny_splits()
    base = {"encoder": str(tmp_path / "ae"), "examples": 0,
            "train": {"epochs": 2, "batch_size": 8, "progress": False}}
    held = segment({**base, "freeze_epochs": 2, "freeze_decoder": True, "output_dir": str(tmp_path / "h")},
                   data=splits)
    for part, start in ((held.segmenter.encoder, ae.encoder), (held.segmenter.decoder, ae.decoder.unet)):
        for k, v in part.state_dict().items():  # weights and batch-norm statistics alike
            assert torch.equal(v, start.state_dict()[k]), k
    fresh_head = make_segmenter(build_segment_config(base=base), ae, splits.train).head
    assert not torch.equal(held.segmenter.head.weight, fresh_head.weight)  # only the head learned
    assert held.metrics and json.loads((tmp_path / "h" / "metrics.json").read_text())["encoder"][
        "freeze_decoder"] is True
    # without freeze_decoder (the default) the same schedule moves the pretrained decoder
    moved = segment({**base, "freeze_epochs": 2, "output_dir": str(tmp_path / "m")}, data=splits)
    assert any(not torch.equal(v, ae.decoder.unet.state_dict()[k])
               for k, v in moved.segmenter.decoder.state_dict().items())

    seg = make_segmenter(build_segment_config(base=base), ae, splits.train)
    assert [g["lr"] for g in seg.param_groups(0.01)] == [0.01]  # scale 1: one group, as before
    seg.pretrained_lr_scale = 0.1
    new, pretrained = seg.param_groups(0.01)
    assert new["lr"] == 0.01 and pretrained["lr"] == pytest.approx(0.001)
    assert {id(p) for p in new["params"]} == {id(p) for p in seg.head.parameters()}
    assert len(new["params"]) + len(pretrained["params"]) == len(list(seg.parameters()))
    seg.decoder_pretrained = False  # a conv autoencoder's segmenter: its decoder is new
    new, _ = seg.param_groups(0.01)
    assert len(new["params"]) == len(list(seg.head.parameters())) + len(list(seg.decoder.parameters()))

    conv = build_model("conv", (3, 16, 16), {"channels": [8, 12]})
    save_model(conv, tmp_path / "conv")
    with pytest.raises(ConfigError, match=r"freeze_decoder: got True, expected false: this decoder is new"):
        segment({**base, "encoder": str(tmp_path / "conv"), "freeze_decoder": True,
                 "output_dir": str(tmp_path / "c")}, data=splits)
    with pytest.raises(ConfigError, match=r"pretrained_lr_scale: got 0.0, expected a number > 0"):
        build_segment_config(base={**base, "pretrained_lr_scale": 0})


def load_model_eval(path):
    from aevision import load

    return load(path)


# --- end to end --------------------------------------------------------------------------------


def test_segment_and_predict_masks_end_to_end(tmp_path, capsys):
    data = ["data.options.n_train=48", "data.options.n_test=8", "data.options.size=16"]
    ae = tmp_path / "ae"
    assert main(["pretrain", "--dataset", "shapes-seg", "--model", "conv", "--epochs", "1",
                 "--batch-size", "16", "--no-progress", "-o", str(ae), "model.channels=[8,16]",
                 "model.code_dim=16", "data.n_train=48", "data.n_test=8", "data.size=16",
                 "--reg", "denoising:noise=masking,p=0.2"]) == 0
    out = tmp_path / "seg"
    assert main(["segment", "--encoder", str(ae), "--labels", "20", "--freeze-epochs", "1",
                 "--epochs", "2", "--batch-size", "8", "--no-progress", "-o", str(out),
                 "loss.class_weights=balanced", "augment.rot90=true", "examples=3",
                 *[d.replace("data.options.", "data.") for d in data]]) == 0
    printed = capsys.readouterr().out
    assert "test mIoU" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]["iou"]) == {"background", "circle", "square", "triangle"}
    assert 0 <= metrics["test"]["miou"] <= 1 and metrics["test"]["pixels"] == 8 * 16 * 16
    assert metrics["config"]["labels"] == 20 and metrics["data"]["labelled_train_images"] == 20
    assert metrics["encoder"]["regularizers"][0]["name"] == "denoising"
    assert metrics["config"]["loss"]["class_weights"] == "balanced"
    masks = sorted((out / "predictions").iterdir())
    assert len(masks) == 3 and len(list((out / "overlays").iterdir())) == 3
    assert (out / "examples.png").is_file()
    png = Image.open(masks[0])
    assert png.mode == "P" and png.size == (16, 16) and np.asarray(png).max() <= 3

    # the saved segmenter predicts exactly what the trained one did
    seg = load_segmenter(out)
    test = load_segmentation(DataConfig(name="shapes-seg", val_fraction=0.0,
                                        options={"n_train": 48, "n_test": 8, "size": 16}), 0).test
    assert np.array_equal(predict_masks(seg, test.images[:1])[0].numpy(), np.asarray(png))

    # predict-masks on a folder: one mask per image, at each image's own size
    folder = tmp_path / "new"
    folder.mkdir()
    Image.fromarray(test.images[0].permute(1, 2, 0).numpy()).save(folder / "a.png")
    Image.fromarray(np.zeros((30, 21, 3), dtype=np.uint8)).save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    pred = tmp_path / "pred"
    assert main(["predict-masks", str(out), str(folder), "-o", str(pred)]) == 0
    assert Image.open(pred / "masks" / "b.png").size == (21, 30)
    assert np.array_equal(np.asarray(Image.open(pred / "masks" / "a.png")), np.asarray(png))
    listing = json.loads((pred / "predictions.json").read_text())
    assert len(listing["predictions"]) == 2 and listing["classes"][0] == "background"

    # errors are one line, exit 2
    assert main(["predict-masks", str(ae), str(folder), "-o", str(pred)]) == 2
    assert "not a segmenter" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["predict-masks", str(out), str(tmp_path / "notes.txt"), "-o", str(tmp_path / "none")]) == 2
    assert "notes.txt: " in capsys.readouterr().err and not (tmp_path / "none").exists()
    assert main(["segment", "--dataset", "shapes-seg", "--no-progress"]) == 2
    assert "encoder: got None" in capsys.readouterr().err
    assert main(["segment", "--encoder", str(ae), "--labels", "1000", *[d.replace("data.options.", "data.")
                                                                         for d in data]]) == 2
    assert "labels: got 1000, expected at most the 43 training images" in capsys.readouterr().err


def test_segment_config_errors():
    with pytest.raises(ConfigError, match=r"loss\.class_weights"):
        build_segment_config(base={"init": "scratch", "loss": {"class_weights": "rare"}})
    with pytest.raises(ConfigError, match=r"augment\.zoom: got 0\.5"):
        build_segment_config(base={"init": "scratch", "augment": {"zoom": 0.5}})
    with pytest.raises(AevisionError, match=r"data\.name: got 'mnist', expected one of"):
        segment({"init": "scratch", "data": {"name": "mnist"}})
    # an encoder frozen for more epochs than the run has: refused, as a fine-tune's freeze_epochs is
    with pytest.raises(ConfigError, match=r"^freeze_epochs: got 5, expected at most train\.epochs \(2\)"):
        build_segment_config(base={"encoder": "runs/ae", "freeze_epochs": 5, "train": {"epochs": 2}})
    build_segment_config(base={"encoder": "runs/ae", "freeze_epochs": 2, "train": {"epochs": 2}})  # frozen


def test_a_segmenter_resumes_from_a_checkpoint_written_before_an_option_existed(tmp_path):
    _autoencoder(tmp_path)
    splits = _tiny_splits()
    cfg = {"encoder": str(tmp_path / "ae"), "examples": 0, "output_dir": str(tmp_path / "seg"),
           "train": {"epochs": 1, "batch_size": 8, "progress": False}}
    segment(cfg, data=splits)
    path = tmp_path / "seg" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["config"]["train"]["warmup_steps"]  # as written before train.warmup_steps existed
    torch.save(ckpt, path)
    cfg["train"]["epochs"] = 2
    assert segment(cfg, data=splits, resume=True).fit.resumed_from.endswith("last.ckpt")


def test_without_validation_metrics_name_the_monitored_training_loss_honestly(tmp_path):
    _autoencoder(tmp_path)
    splits = _tiny_splits()  # data.val_fraction=0: no validation split
    cfg = {"encoder": str(tmp_path / "ae"), "examples": 0, "output_dir": str(tmp_path / "seg"),
           "train": {"epochs": 1, "batch_size": 8, "progress": False}}
    result = segment(cfg, data=splits)
    fit = json.loads((tmp_path / "seg" / "metrics.json").read_text())["fit"]
    assert "best_val_loss" not in fit and fit["monitored"] == "train_loss"
    assert fit["best_train_loss"] == result.fit.best_val_loss  # the engine's field, unchanged
    again = segment(cfg, data=splits, reuse=True)  # read back from that file
    assert again.reused and again.fit.best_val_loss == result.fit.best_val_loss


def _validated_run(tmp_path, epochs, batch_size):
    """A segmenter trained on generated shapes with a validation split: (config, splits, result)."""
    _autoencoder(tmp_path)
    splits = load_segmentation(DataConfig(name="shapes-seg", val_fraction=0.25,
                                          options={"n_train": 24, "n_test": 8, "size": 16}), 0)
    cfg = {"encoder": str(tmp_path / "ae"), "examples": 0, "output_dir": str(tmp_path / "seg"),
           "train": {"epochs": epochs, "batch_size": batch_size, "progress": False}}
    return cfg, splits, segment(cfg, data=splits)


def test_the_epoch_kept_is_the_one_with_the_best_validation_miou(tmp_path):
    cfg, splits, result = _validated_run(tmp_path, epochs=4, batch_size=8)
    history = result.fit.history
    assert all({"val_miou", "val_mean_dice", "val_pixel_accuracy"} <= set(r) for r in history)
    best = max(range(len(history)), key=lambda i: (history[i]["val_miou"], -i))  # the first best
    assert result.fit.best_epoch == best + 1 and result.fit.monitored == "val_miou"
    saved = json.loads((tmp_path / "seg" / "metrics.json").read_text())
    assert saved["fit"]["monitored"] == "val_miou"
    assert saved["val"]["miou"] == pytest.approx(history[best]["val_miou"])  # the weights kept score it
    again = segment(cfg, data=splits, reuse=True)
    assert again.reused and again.fit.best_monitored == result.fit.best_monitored


def test_a_scratch_run_is_the_same_run_whatever_its_pretrained_only_settings_say(tmp_path):
    """A comparison gives scratch the pretrained run's settings; scratch ignores them, so its key does."""
    _autoencoder(tmp_path)
    options = {"n_train": 12, "n_test": 4, "size": 16}
    splits = load_segmentation(DataConfig(name="shapes-seg", options=options), 0)
    cfg = {"encoder": str(tmp_path / "ae"), "init": "scratch", "examples": 0,
           "output_dir": str(tmp_path / "seg"), "train": {"epochs": 1, "batch_size": 8, "progress": False}}
    first = segment({**cfg, "freeze_epochs": 1, "pretrained_lr_scale": 0.1, "freeze_norm": True}, data=splits)
    assert not first.reused
    assert segment(cfg, data=splits, reuse=True).reused
    assert not segment({**cfg, "init": "pretrained"}, data=splits, reuse=True).reused


def test_one_validation_pass_gives_the_engines_loss_terms_and_the_test_scoring(tmp_path):
    """The segmenter's validation pass computes its logits once: the loss terms it records are the
    engine's (the same batches, the same weighting), its scores are the test's scoring of the split."""
    _, splits, result = _validated_run(tmp_path, epochs=2, batch_size=4)
    seg, val = result.segmenter, splits.val
    _, val_batches = segment_batches(result.config, splits.train, val)
    val_batches.batch_size = 4  # several batches: the terms are averaged over them as the engine does
    got = validator(val.classes)(seg, val_batches)
    with torch.no_grad():
        batches = [(x, y, seg(x, y)) for x, y in val_batches.epoch(0)]
    for k in ("loss", "ce", "dice"):
        assert got.terms[k] == pytest.approx(sum(float(t[k]) * len(x) for x, _, t in batches) / len(val))
    test_scoring = score(predict_set(seg, val), val)
    assert got.scores == pytest.approx({k: test_scoring[k] for k in ("miou", "mean_dice", "pixel_accuracy")})
    assert len(batches) > 1 and not seg.training


def test_freeze_norm_keeps_the_pretrained_batch_norm_statistics_after_release(tmp_path):
    ae = build_model("conv", (3, 16, 16), {"channels": [8, 12], "code_dim": 10, "batch_norm": True}, [])
    with torch.no_grad():
        for name, buffer in ae.encoder.named_buffers():
            if name.endswith("running_mean"):
                buffer.add_(0.05)  # statistics no batch of these images would give
    save_model(ae, tmp_path / "ae")
    pretrained = {k: v for k, v in ae.encoder.state_dict().items() if not k.startswith("head.")}
    splits = _tiny_splits()

    def encoder_after(freeze_norm: bool) -> dict[str, torch.Tensor]:
        cfg = {"encoder": str(tmp_path / "ae"), "examples": 0, "freeze_epochs": 1, "freeze_norm": freeze_norm,
               "output_dir": str(tmp_path / f"seg-{freeze_norm}"),
               "train": {"epochs": 3, "batch_size": 8, "progress": False}}
        return segment(cfg, data=splits).segmenter.encoder.state_dict()

    held, drifted = encoder_after(True), encoder_after(False)
    means = [k for k in pretrained if k.endswith("running_mean")]
    weights = [k for k in pretrained if k.endswith("weight") and pretrained[k].dim() == 4]
    assert means and weights
    assert all(torch.equal(held[k], pretrained[k]) for k in means)  # statistics kept after release
    assert not any(torch.equal(held[k], pretrained[k]) for k in weights)  # the weights still trained
    assert not any(torch.equal(drifted[k], pretrained[k]) for k in means)  # without it they move
    with pytest.raises(ConfigError, match=r"freeze_norm: got 'yes', expected true or false"):
        build_segment_config(base={"freeze_norm": "yes"})


def test_segment_monitor_is_a_loss_term_or_a_score():
    assert build_segment_config(base={"init": "scratch"}).train.monitor == "miou"
    build_segment_config(base={"init": "scratch", "train": {"monitor": "dice"}})
    with pytest.raises(ConfigError, match=r"train\.monitor: got 'iou', expected one of loss, ce, dice, "
                                          r"miou, mean_dice, pixel_accuracy"):
        build_segment_config(base={"init": "scratch", "train": {"monitor": "iou"}})


def test_a_run_from_before_train_monitor_is_a_lowest_loss_run_not_todays(tmp_path):
    """Segmenters kept the lowest-loss epoch before ``train.monitor`` existed; its default is now
    miou, so a finished run written then is reused only by a config that asks for the loss."""
    _autoencoder(tmp_path)
    splits = load_segmentation(DataConfig(name="shapes-seg", val_fraction=0.25,
                                          options={"n_train": 16, "n_test": 4, "size": 16}), 0)
    cfg = {"encoder": str(tmp_path / "ae"), "examples": 0, "output_dir": str(tmp_path / "seg"),
           "train": {"epochs": 1, "batch_size": 8, "progress": False, "monitor": "loss"}}
    segment(cfg, data=splits)
    record = tmp_path / "seg" / "run.json"
    written = json.loads(record.read_text())
    del written["key"]["config"]["train"]["monitor"]  # as written before train.monitor existed
    record.write_text(json.dumps(written))
    assert segment(cfg, data=splits, reuse=True).reused  # it kept the lowest loss: asked for here
    del cfg["train"]["monitor"]  # today's default, miou: another run
    again = segment(cfg, data=splits, reuse=True)
    assert not again.reused and again.fit.monitored == "val_miou"


# --- test-time flips ------------------------------------------------------------------------------


def _scratch_segmenter(tta=()):
    cfg = build_segment_config(base={"init": "scratch", "arch": {"name": "conv", "options": {
        "channels": [8, 12], "code_dim": 10}}, "tta": list(tta)})
    torch.manual_seed(0)
    return _decisive(make_segmenter(cfg, None, _tiny_splits().train).eval())


def _decisive(seg):
    """``seg`` with a head whose argmax follows the features, not one bias (as barely trained ones do)."""
    with torch.no_grad():
        seg.head.weight.normal_(0, 5, generator=torch.Generator().manual_seed(0))
        seg.head.bias.zero_()
    return seg


def test_test_time_flips_average_the_mirrored_probabilities_and_make_predictions_mirror_symmetric():
    x = torch.rand(3, 3, 16, 16)
    seg = _scratch_segmenter()
    with torch.no_grad():
        plain = seg.logits(x).softmax(1)
        mirrored = seg.logits(x.flip(-1)).softmax(1).flip(-1)
        assert torch.allclose(seg.scores(x), plain)
        # a random network is not mirror-symmetric: without flips, a mirrored image is segmented differently
        assert not torch.equal(seg.predict(x.flip(-1)), seg.predict(x).flip(-1))
        seg.tta = ["hflip"]
        assert torch.allclose(seg.scores(x), (plain + mirrored) / 2, atol=1e-6)
        assert torch.equal(seg.predict(x.flip(-1)), seg.predict(x).flip(-1))
        seg.tta = ["hflip", "vflip"]  # every combination: as it is, mirrored, upside down, both
        both = seg.logits(x.flip(-1, -2)).softmax(1).flip(-1, -2)
        upside = seg.logits(x.flip(-2)).softmax(1).flip(-2)
        assert torch.allclose(seg.scores(x), (plain + mirrored + upside + both) / 4, atol=1e-6)
        for dims in ((-1,), (-2,), (-1, -2)):
            assert torch.equal(seg.predict(x.flip(dims)), seg.predict(x).flip(dims))
        small = predict_masks(seg, (x[:1] * 255).to(torch.uint8))  # predict-masks takes them too
        assert torch.equal(small, seg.predict(x[:1].mul(255).to(torch.uint8).float() / 255).to(torch.uint8))


def test_test_time_flips_are_configured_checked_and_saved_with_the_segmenter(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"tta: got \['rot90'\]"):
        build_segment_config(base={"init": "scratch", "tta": ["rot90"]})
    with pytest.raises(ConfigError, match=r"tta: got \['hflip', 'hflip'\]"):
        build_segment_config(base={"init": "scratch", "tta": ["hflip", "hflip"]})
    seg = _scratch_segmenter(["hflip"])
    with pytest.raises(ConfigError, match="tta"):
        seg.tta = ["turn"]
    assert seg.tta == ["hflip"]
    save_segmenter(seg, tmp_path / "seg")
    assert load_segmenter(tmp_path / "seg").tta == ["hflip"]
    config = json.loads((tmp_path / "seg" / "config.json").read_text())
    del config["segmenter"]["tta"]  # as saved before test-time flips existed: none
    (tmp_path / "seg" / "config.json").write_text(json.dumps(config))
    assert load_segmenter(tmp_path / "seg").tta == []

    # predict-masks: the segmenter's own flips, or those --tta names
    folder = tmp_path / "images"
    folder.mkdir()
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / "a.png")
    loaded = load_segmenter(tmp_path / "seg")
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    for flips, expected in (("none", []), ("hflip,vflip", ["hflip", "vflip"])):
        assert main(["predict-masks", str(tmp_path / "seg"), str(folder), "-o", str(tmp_path / flips),
                     "--tta", flips]) == 0
        loaded.tta = expected
        got = np.asarray(Image.open(tmp_path / flips / "masks" / "a.png"))
        assert np.array_equal(got, predict_masks(loaded, x)[0].numpy())
    assert main(["predict-masks", str(tmp_path / "seg"), str(folder), "-o", str(tmp_path / "p"),
                 "--tta", "hflip,spin"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--tta: got ['hflip', 'spin']" in err and len(err.splitlines()) == 1


def test_validation_with_test_time_flips_scores_as_the_test_does(tmp_path):
    _, splits, result = _validated_run(tmp_path, epochs=1, batch_size=4)
    seg, val = _decisive(result.segmenter), splits.val
    _, val_batches = segment_batches(result.config, splits.train, val)
    plain = validator(val.classes)(seg, val_batches)
    seg.tta = ["hflip"]
    flipped = validator(val.classes)(seg, val_batches)
    test_scoring = score(predict_set(seg, val), val)
    assert flipped.scores == pytest.approx({k: test_scoring[k] for k in flipped.scores})
    assert flipped.scores != plain.scores  # the flips changed what was scored ...
    assert flipped.terms == plain.terms  # ... not the loss, which is training's
