"""The codec: entropy models, the range coder, the container and the compress/decompress round trip."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aevision.coding import container
from aevision.coding.rangecoder import SymbolReader, SymbolWriter
from aevision.coding.tables import ProbabilityTables, from_cdf
from aevision.errors import AevisionError, ConfigError
from aevision.models import build_model
from aevision.models.resize import at_input_shape
from aevision.regularizers.entropy import FactorizedDensity, gaussian_log_likelihood
from aevision.tasks.compress import Codec, bits_per_pixel, model_hash


def tiny_codec(prior: str = "hyperprior", shape=(3, 16, 16), seed: int = 0):
    torch.manual_seed(seed)
    options = {"channels": 8, "code_channels": 6, "stages": 2}
    reg = {"name": prior, "weight": 0.01}
    if prior == "mean-scale":
        reg = {"name": "hyperprior", "weight": 0.01, "means": True}
    if reg["name"] == "hyperprior":
        reg["channels"] = 5
    return build_model("codec", shape, options, [reg]).eval()


def images(sizes, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        # smooth gradients plus noise: something between a photo and static
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        base = torch.stack([(yy * (c + 1) + xx) % 1.0 for c in range(channels)])
        noisy = base + 0.1 * torch.randn(base.shape, generator=g)
        out.append((noisy.clamp(0, 1) * 255).round().to(torch.uint8))
    return out


# --- entropy models --------------------------------------------------------------------------------


def test_factorized_density_is_a_distribution_over_integers():
    torch.manual_seed(0)
    density = FactorizedDensity(4)
    with torch.no_grad():
        for p in density.biases:
            p.add_(torch.randn_like(p) / density.gain)  # shift the densities off centre
    values = torch.arange(-300, 301, dtype=torch.float32)
    with torch.no_grad():
        ll = density.log_likelihood(values.view(1, 1, 1, -1).expand(1, 4, 1, -1).contiguous())
    total = ll.exp().sum(dim=(0, 2, 3))
    torch.testing.assert_close(total, torch.ones(4), atol=1e-4, rtol=0)
    tables = density.tables()
    for t in range(4):
        assert tables.probs[t].sum() == pytest.approx(1.0, abs=1e-9)
        # in-range table entries are the same probabilities (float64 vs float32)
        lo = int(tables.lo[t])
        k = np.arange(lo, tables.hi(t) + 1)
        ref = ll[0, t, 0, k + 300].exp().double().numpy()
        np.testing.assert_allclose(tables.probs[t][1:-1], ref, atol=1e-5)


def test_gaussian_likelihood_matches_the_cdf_difference_and_stays_finite_in_the_tails():
    y = torch.tensor([0.0, 0.3, -1.0, 1.2, 40.0], dtype=torch.float64)
    s = torch.tensor([0.5, 1.0, 2.0, 0.6, 0.11], dtype=torch.float64)
    normal = torch.distributions.Normal(0.0, s)
    direct = (normal.cdf(y + 0.5) - normal.cdf(y - 0.5)).log()
    got = gaussian_log_likelihood(y, s)
    torch.testing.assert_close(got[:4], direct[:4])
    assert torch.isfinite(got).all() and got[4] < -1000  # direct would be log(0)


@pytest.mark.parametrize("prior", ["factorized", "hyperprior", "mean-scale"])
def test_rate_term_trains_and_estimates_the_real_file_size(prior):
    model = tiny_codec(prior, (3, 32, 32))
    x = torch.stack(images([(32, 32)] * 4)).float() / 255
    model.train()
    terms = model(x)
    assert set(terms) == {"loss", "recon", "rate"} and terms["rate"] > 0
    terms["loss"].backward()
    if prior != "factorized":  # the side information learns from the rate
        for net in (model.regularizers[0].h_a, model.regularizers[0].h_s):
            assert sum(float(p.grad.abs().sum()) for p in net.parameters()) > 0
    model.eval()
    with torch.no_grad():
        estimate = float(model(x)["rate"]) * 4 * 32 * 32  # bits of the 4 images
    codec = Codec(model)
    result = codec.compress_latents([img for img in (x * 255).round().to(torch.uint8)])
    payload_bits = 8 * (len(result.data) - result.header_bytes)
    # the coder spends what the model estimates, up to the final flush of the range coder
    assert abs(payload_bits - estimate) < 0.05 * estimate + 64


@pytest.mark.parametrize("prior", ["factorized", "hyperprior"])
def test_rate_is_priced_in_float32_under_bf16_autocast(prior):
    """bf16-mixed training: the transforms run in bfloat16, the likelihoods must not (bfloat16
    has no CPU log_ndtr and its 8-bit mantissa misprices latents far in the tails)."""
    model = tiny_codec(prior, (3, 32, 32))
    x = torch.stack(images([(32, 32)] * 2)).float() / 255
    with torch.no_grad():
        code = model.encode(x)
        ctx = type("Ctx", (), {"x": x, "z": code})()
        reference = model.regularizers[0].penalty(ctx)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.regularizers[0].penalty(ctx)
            terms = model(x)  # the whole step runs, transforms in bfloat16
    assert mixed.dtype == torch.float32 and float(mixed) == pytest.approx(float(reference), rel=1e-6)
    assert terms["rate"].dtype == torch.float32 and torch.isfinite(terms["loss"])


def test_entropy_model_needs_a_spatial_code():
    with pytest.raises(ConfigError, match=r"regularizers\[0\].name.*spatial code"):
        build_model("conv", (1, 8, 8), {"code_dim": 16}, [{"name": "factorized"}])
    model = build_model("conv", (1, 8, 8), {"code_dim": None, "channels": [4, 6],
                                            "code_activation": "linear"}, [{"name": "factorized"}])
    assert model.regularizers[0].code_shape == (6, 2, 2)


# --- the range coder ---------------------------------------------------------------------------------


def test_range_coder_round_trips_values_far_outside_the_tables():
    tables = from_cdf(np.array([-2, 0]), [np.array([0.0, 0.1, 0.5, 0.9, 0.97, 1.0]),
                                          np.array([0.2, 0.7, 1.0])])
    rng = np.random.default_rng(0)
    values = rng.integers(-3, 4, size=500)
    values[[3, 50, 400]] = [10**9, -(10**9), 2**40 - 5]
    ids = rng.integers(0, 2, size=500)
    writer = SymbolWriter()
    writer.write(values, ids, tables)
    writer.write(np.array([7, -7]), np.array([1, 0]), tables)
    reader = SymbolReader(writer.getvalue())
    np.testing.assert_array_equal(reader.read(ids, tables), values)
    np.testing.assert_array_equal(reader.read(np.array([1, 0]), tables), [7, -7])


def test_probability_tables_check_their_shape():
    with pytest.raises(ValueError):
        ProbabilityTables(np.array([0]), (np.array([0.5, 0.5]),))


# --- the codec -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prior", ["factorized", "hyperprior"])
def test_round_trip_is_bit_exact_in_latents_at_any_size(prior):
    model = tiny_codec(prior)
    codec = Codec(model)
    imgs = images([(16, 16), (13, 21), (40, 24)])
    result = codec.compress_latents(imgs)
    header, latents = codec.decompress_latents(result.data)
    assert header.sizes == ((16, 16), (13, 21), (40, 24))
    for got, sent in zip(latents, result.latents, strict=True):
        assert torch.equal(got, sent)
    decoded = codec.decompress(result.data)
    for img, out, q in zip(imgs, decoded, latents, strict=True):
        assert out.shape == img.shape and out.dtype == torch.uint8
        # the decoder's picture is exactly the model's reconstruction from those integers
        sized = at_input_shape(model, img.shape)
        with torch.no_grad():
            ref = sized.decode(q.unsqueeze(0).flatten(1))[0].clamp(0, 1).mul(255).round().to(torch.uint8)
            assert torch.equal(out, ref)
            # and the integers are the rounded code of the image
            code = sized.encoder(img.unsqueeze(0).float() / 255)
            assert torch.equal(q.flatten(), torch.round(code[0]))


def test_mean_scale_codes_integers_around_predicted_means():
    model = tiny_codec("mean-scale")
    with torch.no_grad():  # means far from zero, so that a decoder ignoring them would show
        model.regularizers[0].h_s[-1].bias[6:].fill_(3.3)
    codec = Codec(model)
    imgs = images([(16, 16), (13, 21)])
    result = codec.compress_latents(imgs)
    _, symbols, values = codec._decode(result.data, "test")
    decoded = codec.decompress(result.data)
    for img, q, sent, y_hat, out in zip(imgs, symbols, result.latents, values, decoded, strict=True):
        assert torch.equal(q, sent) and torch.equal(q, torch.round(q))  # integers, bit-exact
        means = y_hat - q
        assert means.abs().mean() > 1.0  # the decoder adds the predicted means back
        sized = at_input_shape(model, img.shape)
        with torch.no_grad():
            # the model's own quantized code (float32 means) is what the file decodes to
            code = sized.encode(img.unsqueeze(0).float() / 255)[0]
            torch.testing.assert_close(y_hat.flatten(), code, atol=1e-4, rtol=0)
            ref = sized.decode(y_hat.unsqueeze(0).flatten(1))[0].clamp(0, 1).mul(255).round()
            assert torch.equal(out, ref.to(torch.uint8))


def test_mean_scale_trains_under_bf16_autocast_with_a_float32_rate():
    model = tiny_codec("mean-scale", (3, 32, 32)).train()
    x = torch.stack(images([(32, 32)] * 2)).float() / 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = model(x)
    assert terms["rate"].dtype == torch.float32 and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.regularizers[0].h_s.parameters())


def test_huge_latents_survive_the_escape_code():
    model = tiny_codec("factorized")
    with torch.no_grad():
        last = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)][-1]
        last.weight.mul_(30000.0)  # latents far beyond the learned density
    codec = Codec(model)
    result = codec.compress_latents(images([(16, 16)]))
    assert result.latents[0].abs().max() > 1000
    _, latents = codec.decompress_latents(result.data)
    assert torch.equal(latents[0], result.latents[0])


def test_bits_per_pixel_counts_every_byte_of_the_file():
    codec = Codec(tiny_codec())
    imgs = images([(16, 16), (9, 30)])
    result = codec.compress_latents(imgs)
    pixels = 16 * 16 + 9 * 30
    assert bits_per_pixel(result.data) == pytest.approx(8 * len(result.data) / pixels)
    assert result.bits_per_pixel == bits_per_pixel(result.data)
    _, payload = container.parse(result.data)
    assert result.header_bytes == len(result.data) - len(payload) > 0
    # magic, version, hash, count, 2 x (h, w), payload length, two checksums
    assert result.header_bytes == 3 + 1 + 4 + 1 + 4 + len(container._varint(len(payload))) + 8
    assert bits_per_pixel(result.data) > 8 * len(payload) / pixels


def test_model_hash_ignores_the_image_size_but_not_the_weights():
    model = tiny_codec()
    assert model_hash(at_input_shape(model, (3, 40, 24))) == model_hash(model)
    other = tiny_codec(seed=1)
    assert model_hash(other) != model_hash(model)


# --- damaged and foreign files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def made():
    codec = Codec(tiny_codec())
    return codec, codec.compress(images([(16, 16), (13, 21)]))


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_truncated_files_are_refused(made):
    codec, data = made
    for n in range(len(data)):
        with pytest.raises(AevisionError) as e:
            codec.decompress(data[:n], source="x.aev")
        assert one_line(e).startswith("x.aev: ")
    with pytest.raises(AevisionError, match="truncated file"):
        codec.decompress(data[:-3])


def test_corrupted_bytes_are_refused(made):
    codec, data = made
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(AevisionError) as e:
            codec.decompress(bytes(bad))
        one_line(e)
    with pytest.raises(AevisionError, match="unexpected bytes after the payload"):
        codec.decompress(data + b"\0")
    with pytest.raises(AevisionError, match="bad magic"):
        codec.decompress(b"\x89PNG\r\n\x1a\n" + data[8:])


def test_a_damaged_payload_behind_a_valid_checksum_never_decodes_to_a_wrong_picture(made):
    codec, data = made
    header, payload = container.parse(data)
    right = codec.decompress(data)
    rng = np.random.default_rng(0)
    for trial in range(60):
        bad = bytearray(payload)
        if trial % 3 == 0:
            bad[rng.integers(len(bad))] ^= 1 << int(rng.integers(8))
        elif trial % 3 == 1:
            bad = bad[: int(rng.integers(len(bad))) // 4 * 4]
        else:
            bad = bytearray(rng.integers(0, 256, len(bad), dtype=np.uint8).tobytes())
        try:
            out = codec.decompress(container.pack(header, bytes(bad)))
        except AevisionError as e:
            assert "\n" not in str(e)
        else:  # bits the decoder never reads: the same latents, so the same picture
            assert all(torch.equal(a, b) for a, b in zip(out, right, strict=True))


def test_file_from_another_model_is_refused(made):
    _, data = made
    with pytest.raises(AevisionError, match="compressed with another model"):
        Codec(tiny_codec(seed=3)).decompress(data)


def test_newer_format_is_refused(made):
    _, data = made
    bad = bytearray(data)
    bad[3] = container.VERSION + 1
    with pytest.raises(AevisionError, match="newer aevision"):
        container.parse(bytes(bad))


def test_latent_checksum_catches_an_entropy_model_that_decodes_differently(made):
    codec, data = made
    drifted = tiny_codec()
    with torch.no_grad():  # a decoder whose hyperprior scales differ from the encoder's
        drifted.regularizers[0].h_s[-1].bias.add_(0.7)
    other = Codec(drifted)
    other.hash = codec.hash  # as if the weights had matched: only the latent checksum is left
    with pytest.raises(AevisionError, match="decoded latents fail their checksum"):
        other.decompress(data)


def test_container_round_trips_and_checks_its_own_fields():
    header = container.Header(b"abcd", ((1, 1), (300, 70000 // 300)), 123456789)
    data = container.pack(header, b"payload!")
    assert container.parse(data) == (header, b"payload!")
    with pytest.raises(ValueError):
        container.pack(container.Header(b"abc", ((1, 1),), 0), b"")
    with pytest.raises(ValueError):
        container.pack(container.Header(b"abcd", ((0, 5),), 0), b"")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64))
def test_parse_raises_only_aevision_errors_on_arbitrary_bytes(data):
    try:
        header, payload = container.parse(container.MAGIC + data)
    except AevisionError as e:
        assert "\n" not in str(e)
    else:  # only a consistent file gets through, and it re-packs to the same bytes
        assert container.pack(header, payload) == container.MAGIC + data


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 70000), st.integers(1, 3000)), min_size=1, max_size=4),
       st.binary(max_size=40), st.integers(0, 2**32 - 1), st.data())
def test_parse_inverts_pack_and_catches_every_single_byte_change(sizes, payload, crc, data):
    sizes = [(h, w) for h, w in sizes if h * w <= container.MAX_PIXELS and w <= container.MAX_SIDE
             and h <= container.MAX_SIDE] or [(1, 1)]
    header = container.Header(zlib.crc32(payload).to_bytes(4, "little"), tuple(sizes), crc)
    packed = container.pack(header, payload)
    assert container.parse(packed) == (header, payload)
    pos = data.draw(st.integers(0, len(packed) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(packed)
    bad[pos] ^= flip
    with pytest.raises(AevisionError):
        container.parse(bytes(bad))


def test_codec_refuses_models_without_an_entropy_model_and_wrong_images():
    with pytest.raises(AevisionError, match="no entropy model"):
        Codec(build_model("conv", (1, 8, 8), {"code_dim": None}))
    codec = Codec(tiny_codec())
    with pytest.raises(AevisionError, match=r"image 0: expected a \(3, H, W\) uint8"):
        codec.compress([torch.zeros(1, 8, 8, dtype=torch.uint8)])
    with pytest.raises(AevisionError, match="no images"):
        codec.compress([])


def test_resizing_refuses_models_whose_weights_depend_on_the_size():
    model = build_model("conv", (1, 8, 8), {"code_dim": 16})
    with pytest.raises(AevisionError, match="weights depend on the image size"):
        at_input_shape(model, (1, 12, 12))
    spatial = build_model("conv", (1, 8, 8), {"code_dim": None})
    assert at_input_shape(spatial, (1, 13, 7)).reconstruct(torch.rand(2, 1, 13, 7)).shape == (2, 1, 13, 7)


def test_rate_is_in_bits_per_pixel():
    model = tiny_codec("factorized", (3, 16, 16)).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        rate16 = float(model(x)["rate"])
        big = at_input_shape(model, (3, 32, 32))
        rate32 = float(big(x.repeat(1, 1, 2, 2))["rate"])
    assert math.isfinite(rate16) and rate16 > 0
    assert rate32 == pytest.approx(rate16, rel=0.35)  # same content per pixel: similar bpp


def test_compress_and_decompress_commands(tmp_path, capsys):
    from PIL import Image

    from aevision.cli import main
    from aevision.models import save_model

    save_model(tiny_codec(), tmp_path / "codec")
    (tmp_path / "in").mkdir()
    originals = images([(16, 16), (21, 13)])
    for i, img in enumerate(originals):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / "in" / f"p{i}.png")
    assert main(["compress", str(tmp_path / "in"), "-m", str(tmp_path / "codec"),
                 "-o", str(tmp_path / "a.aev")]) == 0
    data = (tmp_path / "a.aev").read_bytes()
    printed = capsys.readouterr().out
    assert f"{len(data):,} bytes" in printed and f"{bits_per_pixel(data):.4f} bits per pixel" in printed
    assert main(["decompress", str(tmp_path / "a.aev"), "-m", str(tmp_path / "codec"),
                 "-o", str(tmp_path / "out")]) == 0
    expected = Codec(tiny_codec()).decompress(data)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png"]  # their names
    for i, img in enumerate(expected):
        got = np.asarray(Image.open(tmp_path / "out" / f"p{i}.png"))
        assert np.array_equal(got, img.permute(1, 2, 0).numpy())
    (tmp_path / "bad.aev").write_bytes(data[:-1])
    assert main(["decompress", str(tmp_path / "bad.aev"), "-m", str(tmp_path / "codec"),
                 "-o", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"aevision: error: {tmp_path / 'bad.aev'}: truncated file") and "\n" not in err
    assert not (tmp_path / "out2").exists()


def test_decompress_never_replaces_files_unasked_and_writes_all_or_nothing(tmp_path, capsys):
    """Decoding into the originals' own folder replaced them with lossy copies; a file it could not
    write (a folder in its place) left the first images written."""
    from PIL import Image

    from aevision.cli import main
    from aevision.models import save_model

    save_model(tiny_codec(), tmp_path / "codec")
    (tmp_path / "in").mkdir()
    for i, img in enumerate(images([(16, 16), (12, 12)])):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / "in" / f"p{i}.png")
    m = ["-m", str(tmp_path / "codec")]
    assert main(["compress", str(tmp_path / "in"), *m, "-o", str(tmp_path / "a.aev")]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    assert main(["decompress", str(tmp_path / "a.aev"), *m, "-o", str(tmp_path / "in")]) == 2
    assert "p0.png exists already (2 of the 2 files to write); give --overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()} == before
    assert main(["decompress", str(tmp_path / "a.aev"), *m, "-o", str(tmp_path / "in"), "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["p0.png", "p1.png"]  # no staging left
    (tmp_path / "part" / "p1.png").mkdir(parents=True)
    assert main(["decompress", str(tmp_path / "a.aev"), *m, "-o", str(tmp_path / "part"), "--overwrite"]) == 2
    assert "p1.png is a folder where a file is to be written" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "part").iterdir()) == ["p1.png"]  # p0.png not written
    assert main(["decompress", str(tmp_path / "in"), *m, "-o", str(tmp_path / "x")]) == 2
    assert "in: a folder, not a compressed file" in capsys.readouterr().err


def test_a_backslash_in_a_file_name_is_compressed_as_an_underscore(tmp_path, capsys):
    """'a\\b.png' is a legal POSIX name: compress refused it, naming 'image 0'."""
    from PIL import Image

    from aevision.cli import main
    from aevision.models import save_model

    save_model(tiny_codec(), tmp_path / "codec")
    (tmp_path / "in").mkdir()
    Image.fromarray(images([(16, 16)])[0].permute(1, 2, 0).numpy()).save(tmp_path / "in" / "a\\b.png")
    m = ["-m", str(tmp_path / "codec")]
    assert main(["compress", str(tmp_path / "in"), *m, "-o", str(tmp_path / "a.aev")]) == 0
    assert container.parse((tmp_path / "a.aev").read_bytes())[0].names == ("a_b.png",)
    assert main(["decompress", str(tmp_path / "a.aev"), *m, "-o", str(tmp_path / "out")]) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a_b.png"]


def test_decompress_gives_back_the_file_names_and_reads_files_without_them(tmp_path):
    from PIL import Image

    from aevision.cli import main
    from aevision.models import save_model

    save_model(tiny_codec(), tmp_path / "codec")
    originals = images([(16, 16), (21, 13), (8, 8)])
    for folder, name, img in (("x", "IMG_1.png", originals[0]), ("x", "IMG_2.jpg", originals[1]),
                              ("y", "IMG_1.bmp", originals[2])):
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / folder / name)
    m = ["-m", str(tmp_path / "codec")]
    assert main(["compress", str(tmp_path / "x"), str(tmp_path / "y" / "IMG_1.bmp"), *m,
                 "-o", str(tmp_path / "h.aev")]) == 0
    header, _ = container.parse((tmp_path / "h.aev").read_bytes())
    assert header.names == ("IMG_1.png", "IMG_2.jpg", "IMG_1.bmp") and header.version == 2
    assert main(["decompress", str(tmp_path / "h.aev"), *m, "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["IMG_1-2.png", "IMG_1.png", "IMG_2.png"]
    assert Image.open(tmp_path / "out" / "IMG_2.png").size == (13, 21)

    # a file without names (the Python API, or an older aevision: format version 1) still decodes
    old = Codec(tiny_codec()).compress(originals[:2])
    assert old[3] == 1
    (tmp_path / "old.aev").write_bytes(old)
    assert main(["decompress", str(tmp_path / "old.aev"), *m, "-o", str(tmp_path / "o2")]) == 0
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["old-000.png", "old-001.png"]


def test_image_names_in_a_file_are_plain_names_or_the_file_is_refused():
    header = container.Header(b"abcd", ((2, 3), (4, 5)), 7, ("été.png", "b"))
    data = container.pack(header, b"xy")
    assert container.parse(data) == (header, b"xy")
    for bad in (("a", "../etc/passwd"), ("a", ""), ("a",), ("a", "b\\c"), ("a", "x" * 256)):
        with pytest.raises(ValueError):
            container.pack(container.Header(b"abcd", ((2, 3), (4, 5)), 7, bad), b"xy")
    # a file that says a name is a path: refused when read, even with every checksum right
    raw = bytearray(data)
    at = bytes(raw).index(b"b\x02")  # the second name, then the payload length
    raw[at:at + 1] = b"/"
    head_end = len(raw) - 2 - 4
    raw[head_end:head_end + 4] = struct.pack("<I", zlib.crc32(b"xy", zlib.crc32(bytes(raw[:head_end]))))
    with pytest.raises(AevisionError, match="not a plain file name"):
        container.parse(bytes(raw))
    with pytest.raises(AevisionError, match="2 image names for 1 images"):
        Codec(tiny_codec()).compress(images([(8, 8)]), names=["a", "b"])
