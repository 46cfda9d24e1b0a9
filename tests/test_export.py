"""Export to ONNX / TorchScript: files per part, dynamic axes, export.json, parity, codec checks."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from aevision.api import pretrain
from aevision.cli import main
from aevision.models import build_model
from aevision.models.inference import entropy_model_input
from aevision.models.io import save_model
from aevision.tasks.export import export_model
from aevision.tasks.export.formats import load_runner
from aevision.tasks.export.graphs import segmenter_graphs
from aevision.tasks.export.parity import codec_parity
from aevision.tasks.segmentation.io import save_segmenter
from aevision.tasks.segmentation.model import build_segmenter, feature_encoder
from conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def png_folder(folder, n=5, size=(16, 16), channels=3, seed=0):
    """Smooth random pictures (gradients plus a little noise) as PNG files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    h, w = size
    for i in range(n):
        ramp = np.linspace(0, 1, w)[None, :, None] * rng.uniform(0.3, 1, (1, 1, channels))
        img = np.clip(ramp + rng.normal(0, 0.05, (h, w, channels)), 0, 1)
        img = (img * 255).astype(np.uint8)
        Image.fromarray(img[..., 0] if channels == 1 else img).save(folder / f"{i}.png")
    return folder


def ort_run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def test_a_pretrained_dense_model_exports_encoder_and_decoder_checked_on_its_own_validation_images(tmp_path):
    pretrain(tiny_config(tmp_path / "run", data={"name": "digits", "limit": 60}))
    result = export_model(tmp_path / "run", tmp_path / "out", limit=4)
    assert [f.name for f in result.files] == ["encoder.onnx", "decoder.onnx", "export.json"]
    manifest = json.loads((tmp_path / "out" / "export.json").read_text())
    assert manifest == json.loads(json.dumps(result.manifest))
    assert manifest["kind"] == "autoencoder" and manifest["architecture"] == "dense"
    assert len(manifest["model_sha256"]) == 64
    assert "validation split of digits" in manifest["parity"]["inputs"]
    enc, dec = manifest["graphs"]
    assert enc["inputs"][0] == {"name": "images", "shape": ["batch", 1, 8, 8], "dtype": "float32",
                                "range": [0.0, 1.0], "range_source": "declared"}
    assert enc["outputs"][0]["name"] == "code" and enc["outputs"][0]["shape"] == ["batch", 16]
    assert dec["inputs"][0]["shape"] == ["batch", 16] and not dec["dynamic_size"]
    assert manifest["parity"]["max_abs_diff"] <= 1e-4 and enc["parity"]["inputs"]["count"] == 4
    # the files themselves: any batch size, the model's own numbers
    from aevision.api import load

    model = load(tmp_path / "run")
    x = torch.rand(5, 1, 8, 8)
    code = ort_run(tmp_path / "out" / "encoder.onnx", x)[0]
    np.testing.assert_allclose(code, model.encode(x).detach().numpy(), atol=1e-5)
    recon = ort_run(tmp_path / "out" / "decoder.onnx", torch.from_numpy(code[:1]))[0]
    np.testing.assert_allclose(recon, model.decode(torch.from_numpy(code[:1])).detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_fully_convolutional_encoder_takes_any_image_size(tmp_path, fmt):
    model = build_model("conv", (3, 16, 16), {"channels": [4, 8], "code_dim": None}).eval()
    save_model(model, tmp_path / "conv")
    png_folder(tmp_path / "imgs")
    result = export_model(tmp_path / "conv", tmp_path / "out", fmt=fmt, inputs=[str(tmp_path / "imgs")])
    enc = result.manifest["graphs"][0]
    assert enc["dynamic_size"] and enc["inputs"][0]["shape"] == ["batch", 3, "height", "width"]
    assert enc["parity"]["inputs"]["shapes"] == [[5, 3, 16, 16], [5, 3, 80, 80]]  # and 64 pixels larger
    assert result.manifest["parity"]["max_abs_diff"] <= 1e-4
    x = torch.rand(2, 3, 20, 12)
    runner = load_runner(tmp_path / "out" / f"encoder{'.onnx' if fmt == 'onnx' else '.pt'}", fmt)
    np.testing.assert_allclose(runner(x)[0], model.encode(x).detach().numpy(), atol=1e-5)


def tiny_codec(tmp_path, means=False):
    torch.manual_seed(0)
    reg = {"name": "hyperprior", "weight": 0.01, "channels": 5, "means": means}
    model = build_model("codec", (3, 16, 16), {"channels": 8, "code_channels": 6, "stages": 2,
                                                "code_gain": 8.0}, [reg]).eval()
    save_model(model, tmp_path / "codec")
    return model


@pytest.mark.parametrize("means", [False, True])
def test_a_codec_exports_its_transforms_and_hyperprior_and_reproduces_its_files(tmp_path, capsys, means):
    tiny_codec(tmp_path, means)
    png_folder(tmp_path / "imgs", n=4)
    assert main(["export", str(tmp_path / "codec"), "-o", str(tmp_path / "out"),
                 "--inputs", str(tmp_path / "imgs")]) == 0
    assert "latents identical" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "export.json").read_text())
    assert manifest["kind"] == "codec" and len(manifest["codec_hash"]) == 8
    names = [g["name"] for g in manifest["graphs"]]
    assert names == ["analysis", "synthesis", "hyper_analysis", "hyper_synthesis"]
    synthesis = manifest["graphs"][1]
    assert synthesis["dynamic_size"] and synthesis["size_multiple"] == 4
    hs = manifest["graphs"][3]
    assert [o["name"] for o in hs["outputs"]] == (["scale", "mean"] if means else ["scale"])
    codec = manifest["parity"]["codec"]
    assert codec["latents_identical"] and codec["cross_decompress_ok"] and codec["images"] == 4
    assert manifest["parity"]["max_abs_diff"] <= 1e-4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([f"{n}.onnx" for n in names]
                                                                          + ["export.json"])


@pytest.mark.parametrize(("name", "options", "size"), [
    ("codec", {"channels": 8, "code_channels": 6, "stages": 2, "code_gain": 8.0}, 18),  # 18 -> 9 -> 5
    ("conv", {"channels": [4, 6], "code_dim": None, "code_activation": "linear"}, 16),
])
def test_factorized_codecs_of_either_architecture_keep_their_integers(tmp_path, name, options, size):
    model = build_model(name, (3, size, size), options, [{"name": "factorized"}]).eval()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.mul_(4.0)  # latents of a few quantization steps, not all zero
    save_model(model, tmp_path / "codec")
    png_folder(tmp_path / "imgs", n=3, size=(size, size))
    result = export_model(tmp_path / "codec", tmp_path / "out", inputs=[str(tmp_path / "imgs")])
    analysis, synthesis = result.manifest["graphs"]
    assert analysis["dynamic_size"] and analysis["opset"] >= 18
    # stages that do not halve exactly bake their output padding in: the synthesis keeps its size
    assert synthesis["dynamic_size"] is (size == 16)
    codec = result.manifest["parity"]["codec"]
    assert codec["latents_identical"] and codec["cross_decompress_ok"] and codec["nonzero_latents"] > 0


def test_codec_parity_catches_an_analysis_that_rounds_differently(tmp_path):
    model = tiny_codec(tmp_path).eval()  # as a Codec runs it
    images = (torch.rand(3, 3, 16, 16) * 255).to(torch.uint8)

    def analysis(x):
        return [entropy_model_input(model, x).numpy()]

    assert codec_parity(model, {"analysis": analysis}, images)["latents_identical"]
    shifted = codec_parity(model, {"analysis": lambda x: [analysis(x)[0] + 0.7]}, images)
    assert not shifted["latents_identical"] and not shifted["cross_decompress_ok"]


def segmenter_run(tmp_path):
    encoder = feature_encoder("conv", (3, 16, 16), {"channels": [4, 8]})
    spec = {"name": "conv", "options": {"channels": [4, 8]}, "input_shape": [3, 16, 16]}
    seg = build_segmenter(encoder, spec,
                          input_shape=[3, 16, 16], classes=["bg", "a", "b"], palette=[(0, 0, 0)] * 3)
    save_segmenter(seg.eval(), tmp_path / "seg")
    return seg


def test_a_segmenter_exports_as_one_network_at_any_size(tmp_path):
    seg = segmenter_run(tmp_path)
    png_folder(tmp_path / "imgs", n=3)
    result = export_model(tmp_path / "seg", tmp_path / "out", inputs=[str(tmp_path / "imgs")])
    (graph,) = result.manifest["graphs"]
    assert result.manifest["kind"] == "segmenter" and graph["file"] == "segmenter.onnx"
    assert graph["outputs"][0]["shape"] == ["batch", 3, "dynamic", "dynamic"]
    x = torch.rand(2, 3, 13, 21)
    np.testing.assert_allclose(ort_run(tmp_path / "out" / "segmenter.onnx", x)[0],
                               seg.logits(x).detach().numpy(), atol=1e-4)


def test_a_segmenter_scored_with_test_time_flips_says_so_beside_its_one_pass_graph(tmp_path):
    seg = segmenter_run(tmp_path)
    assert "flips" not in segmenter_graphs(seg)[0].note
    seg.tta = ["hflip"]
    assert "test-time flips ['hflip']" in segmenter_graphs(seg)[0].note


def test_failed_parity_is_exit_2_and_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    segmenter_run(tmp_path)
    png_folder(tmp_path / "imgs", n=2)
    import aevision.tasks.export.model_export as model_export

    def off_by_a_little(path, fmt):
        run = load_runner(path, fmt)
        return lambda x: [o + 1e-3 for o in run(x)]

    monkeypatch.setattr(model_export, "load_runner", off_by_a_little)
    out = tmp_path / "exports" / "out"
    assert main(["export", str(tmp_path / "seg"), "-o", str(out), "--inputs", str(tmp_path / "imgs")]) == 2
    assert "differs from PyTorch by 0.001" in capsys.readouterr().err
    assert not out.exists() and list((tmp_path / "exports").iterdir()) == []


@pytest.mark.parametrize(("fault", "message"), [
    ("shape", "encoder: the exported file's output has shape (1, 4), the model's (2, 4)"),
    ("raise", "encoder: the exported file fails on an input of shape (2, 1, 8, 8) ([ONNXRuntimeError]"),
])
def test_an_exported_file_that_cannot_run_or_gives_other_shapes_is_a_one_line_error(
        tmp_path, monkeypatch, capsys, fault, message):
    save_model(build_model("dense", (1, 8, 8), {"code_dim": 4}), tmp_path / "ae")
    png_folder(tmp_path / "imgs", n=2, size=(8, 8), channels=1)
    import aevision.tasks.export.model_export as model_export

    def broken(path, fmt):
        def run(x):
            if fault == "raise":
                raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions")
            return [np.zeros((1, 4), np.float32)]
        return run

    monkeypatch.setattr(model_export, "load_runner", broken)
    argv = ["export", str(tmp_path / "ae"), "-o", str(tmp_path / "out"), "--inputs", str(tmp_path / "imgs")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_without_recorded_data_or_inputs_export_says_what_to_give(tmp_path, capsys):
    segmenter_run(tmp_path)
    assert main(["export", str(tmp_path / "seg"), "-o", str(tmp_path / "out")]) == 2
    assert "--inputs IMAGES" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "seg"), "-o", str(tmp_path / "out"), "--format", "tflite"]) == 2
    assert not (tmp_path / "out").exists()


def test_a_model_that_cannot_decode_a_code_exports_its_encoder_alone():
    from aevision.errors import AevisionError
    from aevision.tasks.export.graphs import autoencoder_graphs

    model = build_model("dense", (1, 8, 8), {"code_dim": 4}).eval()
    assert [g.name for g in autoencoder_graphs(model)] == ["encoder", "decoder"]

    def decode(z):
        raise AevisionError("decodes patch tokens, not a pooled code")

    model.decode = decode  # as the masked autoencoder does
    (encoder,) = autoencoder_graphs(model)
    assert encoder.name == "encoder" and "patch tokens" in encoder.note


def test_a_deep_codec_on_small_images_declares_its_latent_size_dynamic_and_a_new_export_leaves_no_old_graphs(
        tmp_path):
    """8x8 images through 5 halvings: a latent of 1x1 at the first parity size and (with a step of
    8) at the second too, so export.json declared it fixed; exporting another model into the same
    folder left the first one's hyperprior graphs beside the new ones."""
    deep = build_model("codec", (1, 8, 8), {"channels": 8, "code_channels": 6, "stages": 5},
                       [{"name": "factorized"}]).eval()
    save_model(deep, tmp_path / "deep")
    png_folder(tmp_path / "imgs", n=3, size=(8, 8), channels=1)
    result = export_model(tmp_path / "deep", tmp_path / "out", inputs=[str(tmp_path / "imgs")])
    analysis = result.manifest["graphs"][0]
    assert analysis["inputs"][0]["shape"][2:] == ["height", "width"]
    assert analysis["outputs"][0]["shape"][2:] == ["dynamic", "dynamic"]
    hyper = build_model("codec", (1, 8, 8), {"channels": 8, "code_channels": 6, "stages": 2},
                        [{"name": "hyperprior"}]).eval()
    save_model(hyper, tmp_path / "hyper")
    export_model(tmp_path / "hyper", tmp_path / "out2", inputs=[str(tmp_path / "imgs")])
    (tmp_path / "out2" / "notes.txt").write_text("the user's own file")
    export_model(tmp_path / "deep", tmp_path / "out2", inputs=[str(tmp_path / "imgs")])
    names = sorted(p.name for p in (tmp_path / "out2").iterdir())
    assert names == sorted([*(g["file"] for g in result.manifest["graphs"]), "export.json", "notes.txt"])


def test_a_video_run_checks_parity_on_limit_frames_drawn_from_its_sequences(tmp_path):
    """--limit counted sequences but indexed frames: 4 asked, 2 frames of the first sequence checked."""
    import aevision

    data = {"name": "moving-shapes", "n_train": 6, "n_test": 2, "frames": 5, "size": 32, "val_fraction": 0.34}
    aevision.pretrain({"seed": 0, "output_dir": str(tmp_path / "dsae"), "data": data,
                       "model": {"name": "dsae", "channels": [8], "keypoints": 4},
                       "train": {"epochs": 1, "batch_size": 4, "progress": False}})
    result = export_model(tmp_path / "dsae", tmp_path / "out", limit=4)
    assert result.manifest["graphs"][0]["parity"]["inputs"]["shapes"][0][0] == 4
