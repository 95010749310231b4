import io
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

from media import BROKEN, encode, encode_oriented, image_bytes, pattern
from patchpack import decode
from patchpack.decode.image import ImageConfig, materialize_image
from patchpack.pipeline.admission import plan_media
from patchpack.errors import SampleError
from patchpack.fit import FitConfig

NATIVE = FitConfig(patch_size=8, max_patches=None)


def decode_native(data: bytes, cfg: ImageConfig | None = None) -> np.ndarray:
    probe = plan_media(data, "image", NATIVE, cfg)
    out = materialize_image(data, probe, cfg)
    assert out.dtype == np.uint8 and out.shape == (1, *probe.size, 3)
    return out[0]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_the_displayed_image(fmt, orientation):
    shown = pattern(48, 80, seed=orientation)  # landscape; 5..8 are stored as portrait
    data = encode_oriented(shown, orientation, fmt)
    probe = plan_media(data, "image", NATIVE)
    assert probe.source_size == (48, 80)
    assert probe.orientation == orientation
    out = decode_native(data)
    err = np.abs(out.astype(int) - shown).mean()
    assert err < (0.01 if fmt != "JPEG" else 3.0)
    # the marker quadrant is top-left after rotation
    assert out[:8, :8].mean() > 240 and out[-8:, -8:].mean() < 230


def test_orientation_can_be_ignored():
    shown = pattern(40, 64)
    data = encode_oriented(shown, 6, "PNG")
    probe = plan_media(data, "image", NATIVE, ImageConfig(exif_orientation=False))
    assert probe.source_size == (64, 40)  # stored, portrait


@pytest.mark.parametrize(
    "mode,fmt",
    [("L", "PNG"), ("L", "JPEG"), ("P", "PNG"), ("P", "GIF"), ("1", "PNG"), ("1", "BMP"), ("CMYK", "JPEG"),
     ("CMYK", "TIFF"), ("LA", "PNG"), ("RGBA", "WEBP"), ("I;16", "PNG"), ("I;16", "TIFF"), ("RGB", "BMP"),
     ("RGB", "TIFF")],
)
def test_modes_decode_to_rgb(mode, fmt):
    src = pattern(40, 56, seed=1)
    data = image_bytes(40, 56, fmt, mode=mode, seed=1)
    out = decode_native(data)
    if mode in ("L", "1", "I;16", "LA"):
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    if mode in ("RGB", "CMYK", "RGBA"):
        assert np.abs(out.astype(int) - src).mean() < 4.0
    if mode == "1":
        assert set(np.unique(out)) <= {0, 255}


def test_16bit_is_rescaled_not_clamped():
    a16 = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    data = encode(Image.fromarray(a16), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = decode_native(data)[..., 0].astype(float)
    assert np.abs(out - a16 / 257.0).max() <= 0.5 + 1e-9
    # a clamp would make every value above 255 white
    assert (out == 255).mean() < 0.01
    assert np.all(np.diff(out.ravel()) >= 0)


@pytest.mark.parametrize("bg", [(255, 255, 255), (0, 0, 0), (10, 200, 30)])
def test_alpha_is_composited_onto_the_background(bg):
    rgba = np.zeros((32, 48, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :24, 3] = 255  # left half opaque red, right half transparent
    rgba[:, 24:32, 3] = 128  # half transparent stripe
    data = encode(Image.fromarray(rgba), "PNG")
    out = decode_native(data, ImageConfig(background=bg)).astype(int)
    assert tuple(out[4, 4]) == (200, 0, 0)
    assert tuple(out[4, 44]) == bg
    mid = out[4, 28]
    expect = (np.array([200, 0, 0]) * 128 + np.array(bg) * 127) / 255
    assert np.abs(mid - expect).max() <= 2


def test_palette_transparency_and_la_use_the_background():
    p = Image.new("P", (16, 16), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.paste(1, (0, 0, 8, 16))
    data = encode(p, "PNG", transparency=0)
    out = decode_native(data, ImageConfig(background=(0, 0, 255)))
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[0, 15]) == (0, 0, 255)
    la = Image.fromarray(np.stack([np.full((8, 8), 100, np.uint8), np.zeros((8, 8), np.uint8)], -1), "LA")
    out = decode_native(encode(la, "PNG"), ImageConfig(background=(7, 8, 9)))
    assert tuple(out[0, 0]) == (7, 8, 9)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_images_give_the_first_frame(fmt):
    frames = [Image.fromarray(np.full((24, 32, 3), v, np.uint8)) for v in (30, 200, 90)]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=50,
                   **({"lossless": True} if fmt == "WEBP" else {}))
    out = decode_native(buf.getvalue())
    assert np.abs(out.astype(int) - 30).max() <= 2


def test_decompression_bomb_limit_refuses_before_decoding():
    data = image_bytes(300, 400, "PNG")
    with pytest.raises(SampleError) as e:
        plan_media(data, "image", NATIVE, ImageConfig(max_pixels=300 * 400 - 1))
    assert e.value.kind == "too-large"
    plan_media(data, "image", NATIVE, ImageConfig(max_pixels=300 * 400))  # at the limit: fine


def test_limit_above_pillows_default_is_honoured():
    # a header claiming more than Pillow's own bomb limit, but under ours
    big = Image.new("1", (20000, 20000))
    data = encode(big, "PNG")
    probe = plan_media(data, "image", FitConfig(patch_size=16, max_patches=4), ImageConfig(max_pixels=500_000_000))
    assert probe.source_size == (20000, 20000)
    assert Image.MAX_IMAGE_PIXELS is not None  # global left as it was


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_payloads_raise_typed_errors(name):
    _, data, kind = BROKEN[name]
    with pytest.raises(SampleError) as e:
        probe = plan_media(data, "image", NATIVE)
        materialize_image(data, probe)
    assert e.value.kind == kind


def test_draft_decodes_jpeg_at_reduced_scale(monkeypatch):
    photo = pattern(1024, 1536, seed=5)
    data = encode(photo, "JPEG", quality=90)
    fit_cfg = FitConfig(patch_size=16, max_patches=64)
    probe = plan_media(data, "image", fit_cfg)
    scales = []
    real = JpegImageFile.draft

    def spy(self, mode, size):
        r = real(self, mode, size)
        scales.append(self.size)
        return r

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    out = materialize_image(data, probe)[0]
    assert scales and scales[0][0] < 1536 and scales[0][0] >= probe.size[1]
    # close to a full decode + resize of the same bytes
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize(probe.size[::-1], Image.Resampling.BICUBIC))
    assert np.abs(out.astype(int) - ref).mean() < 3.0


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 160), w=st.integers(1, 160), p=st.sampled_from([4, 8, 16]),
    budget=st.one_of(st.none(), st.integers(1, 64)), fmt=st.sampled_from(["PNG", "JPEG"]),
)
def test_output_is_exactly_the_fitted_size(h, w, p, budget, fmt):
    data = image_bytes(h, w, fmt, seed=h * w)
    cfg = FitConfig(patch_size=p, max_patches=budget, allow_upsample=True)
    probe = plan_media(data, "image", cfg)
    fh, fw = probe.size
    assert fh % p == 0 and fw % p == 0 and probe.grid == (1, fh // p, fw // p)
    if budget is not None:
        assert probe.tokens <= budget
    assert materialize_image(data, probe).shape == (1, fh, fw, 3)


def test_sampled_fit_is_deterministic_for_a_generator_seed():
    data = image_bytes(200, 300, "PNG")
    cfg = FitConfig(patch_size=8, max_patches=None, mode="side-uniform", side_min=16, side_max=200)
    a = plan_media(data, "image", cfg, rng=np.random.default_rng(1)).size
    b = plan_media(data, "image", cfg, rng=np.random.default_rng(1)).size
    sizes = {plan_media(data, "image", cfg, rng=np.random.default_rng(s)).size for s in range(8)}
    assert a == b and len(sizes) > 1


def test_dispatch_picks_the_image_member_and_repeats_it_per_tubelet():
    data = image_bytes(32, 48, "PNG")
    members = {"json": b"{}", "cls": b"1", "seg.png": data}
    assert decode.media_member(members) == ("seg.png", "image")
    assert decode.media_member({"txt": b"x"}) is None
    video = SimpleNamespace(tubelet=2)
    probe = plan_media(data, "image", NATIVE)
    assert probe.grid == (1, 4, 6)
    frames = decode.materialize(data, probe, None, video)
    assert frames.shape == (2, 32, 48, 3) and np.array_equal(frames[0], frames[1])
    assert decode.materialize(data, probe).shape == (1, 32, 48, 3)
    with pytest.raises(SampleError) as e:
        plan_media(b"\x00\x00\x00\x18ftypmp42", "video", NATIVE)
    assert e.value.kind == "unsupported"
