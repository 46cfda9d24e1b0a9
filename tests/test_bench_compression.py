"""bench/compression.py: the JPEG / WebP sweeps are read back from an earlier run only when nothing
they depend on changed, and a damaged cache is swept again."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture()
def bench(bench_script):
    return bench_script("compression")


def images(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, 40, 48), generator=g, dtype=torch.uint8) for _ in range(2)]


def test_sweep_is_read_back_only_for_the_same_inputs(bench, monkeypatch, tmp_path):
    monkeypatch.setitem(bench.classic_codecs.QUALITIES, "jpeg", (10, 50))
    first, reused = bench.sweep("jpeg", images(0), tmp_path)
    assert not reused and sorted(first) == [10, 50] and len(first[10]) == 2
    again, reused = bench.sweep("jpeg", images(0), tmp_path)
    assert reused and again == first
    other, reused = bench.sweep("jpeg", images(1), tmp_path)  # other pixels: another key
    assert not reused and other != first
    monkeypatch.setitem(bench.classic_codecs.QUALITIES, "jpeg", (10, 50, 90))  # other qualities
    more, reused = bench.sweep("jpeg", images(0), tmp_path)
    assert not reused and sorted(more) == [10, 50, 90] and more[10] == first[10]


def test_damaged_sweep_cache_is_swept_again(bench, monkeypatch, tmp_path):
    monkeypatch.setitem(bench.classic_codecs.QUALITIES, "webp", (20,))
    first, _ = bench.sweep("webp", images(0), tmp_path)
    (path,) = tmp_path.glob("webp-*.json")
    path.write_text(path.read_text()[:40])  # truncated
    again, reused = bench.sweep("webp", images(0), tmp_path)
    assert not reused and again == first
    assert bench.sweep("webp", images(0), None) == (first, False)  # no cache folder: always swept


def test_the_kodak_target_needs_the_whole_range_covered_and_above_jpeg(bench):
    jpeg = [{"bpp": b, "psnr": 20 + 20 * b} for b in (0.1, 0.3, 0.6)]

    def kodak(points):  # (bpp, psnr, gain over JPEG at that point's bpp, image by image)
        return {"jpeg": jpeg, "aevision": [{"bpp": b, "psnr": p, "vs_jpeg_at_equal_bpp": {"psnr_gain_db": g}}
                                           for b, p, g in points]}

    above = [(0.24, 26.0, 1.0), (0.4, 29.0, 1.0), (0.55, 32.0, 1.0)]
    assert bench.target_check(kodak(above))["met"]
    # the same points, but the curve starts at 0.3 bpp: 0.25 is not measured, so not met
    late = bench.target_check(kodak([(0.3, 27.0, 1.0), *above[1:]]))
    assert not late["met"] and late["mean_curves"][0]["gain_db"] is None
    # one point below JPEG at its own bpp
    assert not bench.target_check(kodak([above[0], (0.4, 29.0, -0.1), above[2]]))["met"]


def test_fine_tunes_start_from_the_nearest_base_at_a_higher_rate(bench):
    bases = [0.0015, 0.0004]
    assert bench.parent_base(0.006, bases) == 0.0015  # toward a lower rate: from the nearest base
    assert bench.parent_base(0.0007, bases) == 0.0004  # not from 0.0015, the nearer one in weight
    assert bench.parent_base(0.0002, bases) == 0.0004  # no base at a higher rate: the highest-rate one
    assert bench.parent_base(0.0015, bases) == 0.0015


def test_fine_tunes_toward_a_higher_rate_train_their_own_number_of_epochs(bench, tmp_path):
    from aevision.data import ImageSet, Splits

    g = torch.Generator().manual_seed(0)
    splits = Splits(train=ImageSet(torch.randint(0, 256, (16, 3, 32, 32), generator=g, dtype=torch.uint8)),
                    test=None)
    base = {"model": {"name": "codec", "channels": 8, "code_channels": 8},
            "regularizers": [{"name": "hyperprior"}],
            "train": {"batch_size": 8, "lr": 1e-3, "progress": False, "warmup_steps": 2},
            "data": {"name": "generated"}}
    out = bench.train_codecs("t", base, splits, [0.0015, 0.006, 0.0007], [0.0015], base_epochs=1,
                             finetune_epochs=1, finetune_lr=2e-4, runs=tmp_path, seed=0,
                             finetune_epochs_up=3)
    done = {w: training for w, _, training in out}
    # the base warms up; a fine-tune starts from trained weights, at its own low rate at once
    warmup = {w: json.loads((d / "config.json").read_text())["config"]["train"]["warmup_steps"]
              for w, d, _ in out}
    assert warmup == {0.0015: 2, 0.006: 0, 0.0007: 0}
    assert [w for w, _, _ in out] == [0.0015, 0.006, 0.0007]
    assert (done[0.0015]["steps"], done[0.006]["steps"], done[0.0007]["steps"]) == (2, 2, 6)
    assert done[0.006]["epochs"] == 1 and done[0.0007]["epochs"] == 3
    assert done[0.0007]["init_from"] == str(tmp_path / "t-w0.0015")
    # the same call again reads every codec back instead of training it
    again = bench.train_codecs("t", base, splits, [0.0015, 0.006, 0.0007], [0.0015], base_epochs=1,
                               finetune_epochs=1, finetune_lr=2e-4, runs=tmp_path, seed=0,
                               finetune_epochs_up=3)
    assert all("reused" in training for _, _, training in again)
    assert done[0.0015]["threads"] == torch.get_num_threads()
    # --train-only's summary: each codec's last epoch, whose loss is recon + weight * rate
    summary = bench.training_summary(out)
    assert [s["weight"] for s in summary] == [0.0015, 0.006, 0.0007]
    for s, (_, model_dir, _) in zip(summary, out, strict=True):
        rows = (model_dir / "history.csv").read_text().splitlines()
        last = dict(zip(rows[0].split(","), rows[-1].split(","), strict=True))
        terms = s["last_epoch"]
        assert terms["loss"] == float(last["train_loss"]) and set(terms) == {"loss", "recon", "rate"}
        assert terms["loss"] == pytest.approx(terms["recon"] + s["weight"] * terms["rate"], rel=1e-5)
        assert s["train_seconds"] == pytest.approx(sum(float(r.split(",")[rows[0].split(",").index(
            "train_seconds")]) for r in rows[1:]), abs=0.01)  # the whole run's, not the last epoch's
    assert len((tmp_path / "t-w0.0007" / "history.csv").read_text().splitlines()) == 1 + 3


def test_a_killed_codec_resumes_to_the_uninterrupted_weights_only_on_the_same_data(
        bench, monkeypatch, tmp_path):
    from aevision.data import ImageSet, Splits
    from aevision.engine.loop import Trainer
    from aevision.io import read_safetensors

    def splits(seed: int) -> Splits:
        g = torch.Generator().manual_seed(seed)
        return Splits(train=ImageSet(torch.randint(0, 256, (16, 3, 32, 32), generator=g, dtype=torch.uint8)),
                      test=None)

    base = {"model": {"name": "codec", "channels": 8, "code_channels": 8},
            "regularizers": [{"name": "hyperprior"}],
            "train": {"batch_size": 8, "lr": 1e-3, "progress": False}, "data": {"name": "generated"}}
    train_epoch = Trainer._train_epoch

    def train(runs, data=None, kill=None):
        """Train the codecs; ``kill``: the run (folder name) that dies as its 2nd epoch starts."""
        def killed(self, *args, **kwargs):
            if args[1] == 1 and self.ckpt_dir.parent.name == kill:  # _train_epoch(fit, epoch, report)
                raise KeyboardInterrupt
            return train_epoch(self, *args, **kwargs)

        monkeypatch.setattr(Trainer, "_train_epoch", killed)
        try:
            return {w: done for w, _, done in bench.train_codecs(
                "t", base, data or splits(0), [0.0015, 0.0007], [0.0015], base_epochs=2, finetune_epochs=1,
                finetune_lr=2e-4, runs=runs, seed=0, finetune_epochs_up=2)}
        finally:
            monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)

    def weights(runs, w):
        return read_safetensors(runs / f"t-w{w:g}" / "model.safetensors")

    train(tmp_path / "ref")
    # killed in the base's 2nd epoch, then (the base resumed and finished) in the fine-tune's 2nd
    for kill in ("t-w0.0015", "t-w0.0007"):
        with pytest.raises(KeyboardInterrupt):
            train(tmp_path / "killed", kill=kill)
    done = train(tmp_path / "killed")
    assert "reused" in done[0.0015]
    assert "resumed" in done[0.0007] and done[0.0007]["epochs"] == 2
    for w in (0.0015, 0.0007):
        a, b = weights(tmp_path / "ref", w), weights(tmp_path / "killed", w)
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), w

    # other training images (the checkpoint's own config cannot tell): a kill, then a fresh start
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "other", kill="t-w0.0015")
    done = train(tmp_path / "other", data=splits(1))
    assert "resumed" not in done[0.0015] and "reused" not in done[0.0015]
