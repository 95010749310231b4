"""16-bit and other wide image modes: rescaled (not clamped), box-reduced before a large
downscale, and never copied full-size into int64/float64."""

from __future__ import annotations

import io
import tracemalloc
import zlib

import numpy as np
from PIL import Image

from patchpack.decode.image import ImageConfig, materialize_image, read_image_header
from patchpack.fit import FitConfig, plan_example


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def decode(data: bytes, max_patches: int | None, cfg: ImageConfig | None = None) -> np.ndarray:
    cfg = cfg or ImageConfig()
    header = read_image_header(data, cfg)
    plan = plan_example(header, FitConfig(patch_size=8, max_patches=max_patches), None, np.random.default_rng(0))
    return materialize_image(data, plan, cfg)[0]


def test_16bit_gradient_downscaled_matches_the_8bit_reference():
    h, w = 1200, 1600
    a16 = (np.linspace(0, 65535, w)[None, :] * np.ones((h, 1))).astype(np.uint16)
    out = decode(png(a16), 48)[..., 0].astype(float)
    ref8 = np.rint(a16 / 257.0).astype(np.uint8)
    want = np.asarray(Image.fromarray(ref8).resize(out.shape[::-1], Image.Resampling.BICUBIC)).astype(float)
    assert np.abs(out - want).max() <= 2.0  # box reduction first, then the same bicubic resize
    assert np.all(np.diff(out[out.shape[0] // 2]) >= -1)  # still a rising ramp, no clamp to white
    assert out[:, -1].mean() > 250 and out[:, 0].mean() < 5


def test_32bit_integer_and_float_modes_rescale_without_clamping():
    i32 = np.linspace(0, 300_000, 64 * 64).reshape(64, 64).astype(np.int32)
    buf = io.BytesIO()
    Image.fromarray(i32, "I").save(buf, "TIFF")
    out = decode(buf.getvalue(), None)[..., 0].astype(float)
    assert np.abs(out - np.rint(i32 * 255.0 / 300_000)).max() <= 1  # scaled by its own peak, not clamped
    f = np.linspace(0, 1, 64 * 64).reshape(64, 64).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(f, "F").save(buf, "TIFF")
    out = decode(buf.getvalue(), None)[..., 0].astype(float)
    assert np.abs(out - np.rint(f * 255)).max() <= 1


def test_no_full_size_wide_copy_while_decoding_a_large_16bit_png():
    side = 3000  # 9 Mpx: one int64 or float64 copy is 72 MB
    a16 = np.full((side, side), 40000, np.uint16)
    data = png(a16)
    del a16
    tracemalloc.start()
    out = decode(data, 64)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < side * side * 8 * 0.25, f"peak {peak / 2**20:.0f} MiB of numpy/Python allocations"
    assert abs(int(out[..., 0].mean()) - round(40000 / 257)) <= 1


def test_large_png_decoded_in_bands_matches_the_whole_decode(monkeypatch):
    import patchpack.decode.image as image_mod
    import patchpack.decode.png_bands as bands

    y, x = np.mgrid[0:700, 0:500]
    rgb = np.stack([(x * 3 + y) % 256, (y * 5) % 256, (x * y) % 256], -1).astype(np.uint8)
    g16 = ((x * 131 + y * 17) % 65536).astype(np.uint16)
    for arr in (rgb, g16):
        data = png(arr)
        whole = decode(data, 20)
        monkeypatch.setattr(image_mod, "_BANDED_PIXELS", 1)  # band even this small image
        monkeypatch.setattr(bands, "BAND_BYTES", 20_000)  # many bands
        banded = decode(data, 20)
        monkeypatch.undo()
        assert banded.shape == whole.shape
        assert np.abs(banded.astype(int) - whole.astype(int)).max() <= 2  # reduce-then-resize vs resize


def test_band_decoder_reduces_exactly_and_refuses_what_it_cannot_keep():
    from patchpack.decode.modes import to_8bit
    from patchpack.decode.png_bands import decode_png_reduced

    rng = np.random.default_rng(0)
    for arr, mode in [(rng.integers(0, 256, (301, 257, 3), dtype=np.uint8), "RGB"),
                      (rng.integers(0, 256, (301, 257, 4), dtype=np.uint8), "RGBA"),
                      (rng.integers(0, 65536, (301, 257)).astype(np.uint16), "I;16")]:
        data = png(arr)
        full = Image.open(io.BytesIO(data))
        full.load()
        want = to_8bit(full, 4) if mode == "I;16" else full.reduce(4)
        got = decode_png_reduced(data, 4, to_8bit)
        assert np.array_equal(np.asarray(got), np.asarray(want))
    data = bytearray(png(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    data[28] = 1  # IHDR interlace byte: Adam7 (Pillow writes none), decoded whole by the caller
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    assert decode_png_reduced(bytes(data), 4) is None
    assert decode_png_reduced(png(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))[:-40], 4) is None
