"""Only the image formats patchpack reads are parsed: EPS (Ghostscript), PSD, ... are not-media."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from patchpack.decode import read_header
from patchpack.decode.image import IMAGE_FORMATS, ImageConfig
from patchpack.errors import SampleError

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\nshowpage\n"


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(buf, fmt)
    return buf.getvalue()


def test_eps_is_never_opened_as_an_image(monkeypatch):
    assert Image.open(io.BytesIO(EPS)).format == "EPS"  # Pillow alone would take it
    import subprocess

    def refuse(*a, **k):
        raise AssertionError("a program was started")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    with pytest.raises(SampleError) as e:
        read_header(EPS, "image")
    assert e.value.kind == "not-media" and "not an image in the formats read (JPEG, PNG" in str(e.value)
    with pytest.raises(ValueError, match="EPS is never decoded"):
        ImageConfig(formats=("PNG", "eps"))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "TGA", "ICO"])
def test_the_formats_read_by_default_open(fmt):
    header = read_header(_encoded(fmt), "image")
    assert tuple(header.source_size) == (16, 16) and fmt in IMAGE_FORMATS


def test_a_format_outside_the_list_is_not_media_unless_asked_for():
    data = _encoded("PCX")
    with pytest.raises(SampleError) as e:
        read_header(data, "image")
    assert e.value.kind == "not-media"
    header = read_header(data, "image", image_cfg=ImageConfig(formats=IMAGE_FORMATS + ("PCX",)))
    assert header.format == "PCX" and tuple(header.source_size) == (16, 16)
    with pytest.raises(ValueError, match="unknown: \\['NOPE'\\]"):
        ImageConfig(formats=("NOPE",))
