"""Mutated media bytes: every sample gives tokens or a typed SampleError, never another exception."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from patchpack.decode.image import ImageConfig
from patchpack.errors import SampleError
from patchpack.fit import FitConfig
from patchpack.config import LoaderConfig
from patchpack.pipeline.admission import admit_sample
from patchpack.pipeline.tokens import example_tokens
from patchpack.sources import Sample

FIT = FitConfig(patch_size=8, max_patches=32)


def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


SEEDS = {"png": _encoded("PNG"), "jpg": _encoded("JPEG"), "webp": _encoded("WEBP"), "gif": _encoded("GIF")}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SEEDS)), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       st.one_of(st.none(), st.integers(0, 10**6)))
def test_mutated_images_give_tokens_or_a_typed_error(ext, flips, cut):
    data = bytearray(SEEDS[ext])
    for pos, value in flips:
        data[pos % len(data)] = value
    if cut is not None:
        del data[cut % (len(data) + 1):]
    sample = Sample("k", "s", {ext: bytes(data), "cls": b"1"})
    try:
        cfg = LoaderConfig(fit=FIT, image=ImageConfig())
        held = admit_sample(sample, cfg, 0, 0, 0.0)
        plan = held.plan
        tokens = example_tokens(held, plan.tokens, cfg)
        patches, positions = tokens.patches, tokens.positions
    except SampleError as e:
        assert e.kind in ("empty", "truncated", "corrupt", "not-media", "too-large", "too-slow", "unsupported")
    else:
        assert patches.shape == (plan.tokens, 8 * 8 * 3) and len(positions) == plan.tokens
