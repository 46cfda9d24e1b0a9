"""Every architecture x regularizer: shapes, gradients, exact reconstruction sizes."""

from __future__ import annotations

import pytest
import torch

from aevision.errors import AevisionError, ConfigError
from aevision.models import MODELS, build_model

REGULARIZERS = [
    [],
    [{"name": "l1"}],
    [{"name": "topk", "k": 4}],
    [{"name": "contractive", "method": "jvp"}],
    [{"name": "contractive", "method": "vjp"}],
    [{"name": "denoising", "noise": "gaussian"}],
    [{"name": "denoising", "noise": "salt_pepper"}],
    [{"name": "denoising", "noise": "masking"}, {"name": "l1"}, {"name": "contractive"}],
]
SHAPES = [(1, 28, 28), (3, 32, 32), (1, 13, 17), (3, 9, 8)]
# the code-size option of each architecture (a codec's code is spatial: channels x h x w)
CODE_OPTIONS = {"codec": ({"code_channels": 8, "channels": 8}, 8 * 1 * 2),
                # a U-Net's code is all the decoder sees: the input and every stage map
                "unet": ({"channels": [4, 8]}, 1 * 13 * 17 + 4 * 7 * 9 + 8 * 4 * 5),
                # one unit map per patch position: (13 - 3 + 1) x (17 - 3 + 1)
                "patches": ({"patch_size": 3, "features": 8}, 8 * 11 * 15)}


# mae: patches must divide the image, it decodes tokens instead of codes and refuses forward-mode
# contractive estimates; test_mae.py runs it with the same regularizers
@pytest.mark.parametrize("name", [n for n in MODELS.names() if n != "mae"])
@pytest.mark.parametrize("regs", REGULARIZERS, ids=lambda r: "+".join(x["name"] for x in r) or "none")
def test_forward_backward_every_combination(name, regs):
    options, code_size = CODE_OPTIONS.get(name, ({"code_dim": 8}, 8))
    model = build_model(name, (1, 13, 17), options, regs)
    x = torch.rand(5, 1, 13, 17)
    terms = model(x)
    assert set(terms) >= {"loss", "recon"}
    expected_loss = terms["recon"] + sum(
        r.weight * terms[r.term] for r in model.regularizers if r.term)
    assert torch.allclose(terms["loss"], expected_loss)
    terms["loss"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert model.encode(x).shape == (5, code_size)
    target = x if model.target is None else model.target(x)  # e.g. dsae: a small grey image
    assert model.decode(model.encode(x)).shape == target.shape


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("down,up", [("stride", "transpose"), ("pool", "resize"),
                                     ("stride", "resize"), ("pool", "transpose")])
@pytest.mark.parametrize("channels", [[8], [8, 16, 16]])
def test_conv_reconstruction_has_exactly_the_input_shape(shape, down, up, channels):
    model = build_model("conv", shape, {"channels": channels, "downsample": down, "upsample": up,
                                        "batch_norm": True, "code_dim": 10})
    x = torch.rand(2, *shape)
    assert model.reconstruct(x).shape == x.shape


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("down", ["stride", "pool", "pool_after_first"])
@pytest.mark.parametrize("name", ["conv", "unet"])
def test_residual_encoder_keeps_every_size_and_trains_with_every_regularizer_family(shape, down, name):
    options = {"channels": [8, 16], "blocks_per_stage": 2, "downsample": down, "batch_norm": True,
               "residual": True, **({"code_dim": 10} if name == "conv" else {})}
    model = build_model(name, shape, options, [{"name": "denoising", "noise": "masking"},
                                               {"name": "contractive"}, {"name": "l1"}])
    x = torch.rand(2, *shape)
    assert model.reconstruct(x).shape == x.shape
    plain = build_model(name, shape, {**options, "residual": False})
    sizes = [f.shape for f in model.encoder.forward_features(x)]
    assert sizes == [f.shape for f in plain.encoder.forward_features(x)]  # the same stage maps
    model(x)["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("residual", [False, True])
def test_pool_after_first_gives_pools_stage_maps_with_the_rest_of_each_stage_at_half_size(residual):
    """airbench's layout (conv, pool, conv): the same stage maps as ``pool``; each stage's first
    block sees the stage's input resolution, its later blocks half of it."""
    options = {"channels": [8, 16], "blocks_per_stage": 2, "batch_norm": True, "residual": residual,
               "code_dim": None}
    early = build_model("conv", (3, 15, 12), {**options, "downsample": "pool_after_first"})
    late = build_model("conv", (3, 15, 12), {**options, "downsample": "pool"})
    x = torch.rand(2, 3, 15, 12)
    assert [f.shape for f in early.encoder.forward_features(x)] == \
        [f.shape for f in late.encoder.forward_features(x)] == [(2, 8, 8, 6), (2, 16, 4, 3)]
    seen = []
    convs = [m for m in early.encoder.stages[0].modules() if isinstance(m, torch.nn.Conv2d)
             and m.kernel_size == (3, 3)]
    for conv in convs:
        conv.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape[-2:])))
    early.encode(x)
    per_block = 2 if residual else 1  # a residual block holds two 3 x 3 convs
    assert seen == [(15, 12)] * per_block + [(8, 6)] * per_block


def test_residual_stages_are_basic_blocks_with_a_projection_where_the_shape_changes():
    from aevision.models.conv import ResidualBlock

    model = build_model("conv", (3, 16, 16), {"channels": [8, 16], "blocks_per_stage": 2,
                                              "residual": True, "batch_norm": True, "code_dim": None})
    blocks = [m for m in model.encoder.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 4  # blocks_per_stage residual blocks per stage
    # a projection exactly where width or resolution change: each stage's first block
    assert [not isinstance(b.shortcut, torch.nn.Identity) for b in blocks] == [True, False, True, False]
    convs = [m for b in blocks for m in b.body.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8  # two convs a block


def test_residual_block_adds_its_input_back():
    from aevision.models.conv import ResidualBlock

    torch.manual_seed(0)
    same = ResidualBlock(4, 4, 3, 1, bn=False, act="relu")
    torch.nn.init.zeros_(same.body[-1].weight)
    torch.nn.init.zeros_(same.body[-1].bias)
    x = torch.randn(2, 4, 7, 5)
    assert torch.equal(same(x), torch.relu(x))  # a silent body leaves the identity path
    down = ResidualBlock(4, 6, 3, 2, bn=True, act="relu")
    assert down(x).shape == (2, 6, 4, 3)  # ceil(7 / 2) x ceil(5 / 2)


def test_conv_spatial_code_keeps_the_feature_map():
    model = build_model("conv", (1, 28, 28), {"channels": [8, 16], "code_dim": None})
    z = model.encode(torch.rand(3, 1, 28, 28))
    assert z.shape == (3, 16 * 7 * 7)
    assert len(model.encoder.forward_features(torch.rand(3, 1, 28, 28))) == 2


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("down", ["stride", "pool", "pool_after_first"])
def test_unet_reconstructs_the_exact_shape_from_the_input_and_every_stage(shape, down):
    model = build_model("unet", shape, {"channels": [8, 16, 16], "downsample": down, "batch_norm": True})
    x = torch.rand(2, *shape)
    assert model.reconstruct(x).shape == x.shape
    z = model.encode(x)
    feats = model.encoder.forward_features(x)
    assert z.shape == (2, x[0].numel() + sum(f[0].numel() for f in feats)) == (2, model.code_dim)
    assert torch.equal(z[:, : x[0].numel()], x.flatten(1))  # the decoder's stem sees the input
    assert torch.equal(z[:, -feats[-1][0].numel():], feats[-1].flatten(1))


def test_dense_default_is_the_classic_recipe():
    model = build_model("dense", (1, 28, 28))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 256), (256, 784)]
    z = model.encode(torch.rand(4, 1, 28, 28))
    assert (z >= 0).all()  # ReLU code
    out = model.reconstruct(torch.rand(4, 1, 28, 28))
    assert ((out > 0) & (out < 1)).all()  # sigmoid output


def test_dense_hidden_layers_are_mirrored():
    model = build_model("dense", (1, 8, 8), {"hidden": [32, 24], "code_dim": 5})
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [(64, 32), (32, 24), (24, 5), (5, 24), (24, 32), (32, 64)]


def test_dense_decoder_can_differ_from_the_mirror():
    model = build_model("dense", (1, 28, 28), {"hidden": [784], "code_dim": 128, "decoder_hidden": [128]})
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [(784, 784), (784, 128), (128, 128), (128, 784)]


def test_wrong_image_size_is_a_one_line_error():
    model = build_model("dense", (1, 8, 8), {"code_dim": 4})
    with pytest.raises(AevisionError, match=r"expects images of shape 1x8x8.*got 3x8x8"):
        model.check_input(torch.rand(2, 3, 8, 8))


@pytest.mark.parametrize("name,options,field", [
    ("conv", {"code_dim": 0}, "model.code_dim"),
    ("conv", {"channels": []}, "model.channels"),
    ("conv", {"kernel_size": 4}, "model.kernel_size"),
    ("conv", {"downsample": "avg"}, "model.downsample"),
    ("conv", {"colour": "red"}, "model.colour"),
    ("unet", {"channels": []}, "model.channels"),
    ("unet", {"kernel_size": 4}, "model.kernel_size"),
    ("unet", {"channels": [8, 8], "decoder_channels": [8]}, "model.decoder_channels"),
    ("unet", {"stem_channels": -1}, "model.stem_channels"),
    ("unet", {"code_dim": 8}, "model.code_dim"),  # its code is what its decoder sees: no size option
])
def test_bad_model_options_name_the_field(name, options, field):
    with pytest.raises(ConfigError) as e:
        build_model(name, (1, 8, 8), options)
    assert e.value.field == field


def test_clips_are_flattened_for_the_loss():
    model = build_model("dense", (1, 8, 8), {"code_dim": 4})
    terms = model(torch.rand(2, 3, 1, 8, 8))  # 2 clips of 3 frames
    assert terms["loss"].dim() == 0


def test_a_saved_model_is_found_from_its_folder_or_its_weights_file(tmp_path):
    from aevision.io import read_json, write_json
    from aevision.models.io import load_model, model_files, save_model, saved_run, trained_on

    folder = tmp_path / "run"
    save_model(build_model("dense", (1, 8, 8), {"code_dim": 4}), folder)
    assert model_files(folder) == (folder, folder / "model.safetensors")
    assert model_files(folder / "model.safetensors") == (folder, folder / "model.safetensors")
    assert saved_run(folder) == ({}, 0) and trained_on(folder / "model.safetensors") is None
    config = read_json(folder / "config.json")
    run = {"seed": 3, "data": {"name": "shapes", "limit": 50}}
    write_json(folder / "config.json", {**config, "config": run})
    data = trained_on(folder)
    assert (data.name, data.limit, saved_run(folder)[1]) == ("shapes", 50, 3)
    assert load_model(folder / "model.safetensors").code_dim == 4
    with pytest.raises(AevisionError, match="no such model folder"):
        load_model(tmp_path / "nothing")
