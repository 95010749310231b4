"""timm NaFlexViT gives the same logits from ``to_timm_naflex`` as from timm's own NaFlex collate.

timm imports torchvision at import time (``FrozenBatchNorm2d``, transforms, datasets), and
torchvision cannot be installed beside a CPU-only torch wheel. The fixture below puts a stub
of the few torchvision modules timm names into ``sys.modules`` for this module's tests only;
any stub class raises when used, so a code path that really needs torchvision fails loudly
instead of passing silently. The model, ``Patchify`` and ``NaFlexCollator`` used here are pure
torch. The stub and every timm module are removed again afterwards.
"""

import enum
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from interop_cases import image, image_tokens, pack
from patchpack.interop import normalize, to_timm_naflex

P = 4
_STUBBED = [
    "torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.transforms",
    "torchvision.transforms.functional", "torchvision.transforms.v2", "torchvision.transforms.v2.functional",
    "torchvision.datasets", "torchvision.utils", "torchvision.models", "torchvision.models.feature_extraction",
    "torchvision.io",
]


class _InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


class _StubModule(types.ModuleType):
    """Any attribute is a class that refuses to be instantiated."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "InterpolationMode":
            return _InterpolationMode

        def refuse(*_a, **_k):
            raise RuntimeError(f"torchvision is not installed (test stub): {self.__name__}.{name}")

        value = type(name, (), {"__init__": refuse})
        setattr(self, name, value)
        return value


@pytest.fixture(scope="module")
def timm():
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed")
    if importlib.util.find_spec("torchvision") is not None:
        import timm as real

        yield real
        return
    before = set(sys.modules)
    stubs = {name: _StubModule(name) for name in _STUBBED}
    for name, mod in stubs.items():
        mod.__path__ = []
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(stubs[parent], child, mod)
    sys.modules.update(stubs)
    try:
        import timm as loaded
        from timm.data import naflex_dataset, naflex_transforms  # noqa: F401
        from timm.models import naflexvit  # noqa: F401

        yield loaded
    finally:
        for name in set(sys.modules) - before:
            if name.split(".")[0] in ("timm", "torchvision"):
                del sys.modules[name]


def _model(timm, seed=0):
    from timm.models.naflexvit import NaFlexVit, NaFlexVitCfg

    torch.manual_seed(seed)
    cfg = NaFlexVitCfg(patch_size=P, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
                       pos_embed_grid_size=(4, 4), global_pool="map")
    return NaFlexVit(cfg, num_classes=5).eval()


GRIDS = [(3, 5), (4, 4), (2, 7), (6, 2), (1, 1), (5, 3)]
MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_logits_equal_timm_naflex_collate(timm):
    from timm.data.naflex_dataset import NaFlexCollator
    from timm.data.naflex_transforms import Patchify

    model = _model(timm)
    imgs = [image(h, w, i) for i, (h, w) in enumerate(GRIDS)]
    toks = [image_tokens(im, f"k{i}", label=i % 5) for i, im in enumerate(imgs)]
    batch = pack([toks[:2], toks[2:5], toks[5:]], seq_len=40, max_per_seq=3)

    # timm's own path: normalised [C, H, W] image -> Patchify -> NaFlexCollator
    mean, std = (torch.tensor(v)[:, None, None] for v in MEAN_STD)
    patchify = Patchify(P)
    samples = [(patchify((torch.from_numpy(im).permute(2, 0, 1).float() / 255 - mean) / std), i % 5)
               for i, im in enumerate(imgs)]
    theirs, targets = NaFlexCollator(max_seq_len=40)(samples)

    ours = to_timm_naflex(batch, max_seq_len=40)
    assert torch.equal(ours["patch_coord"], theirs["patch_coord"])
    assert torch.equal(ours["patch_valid"], theirs["patch_valid"])
    ours["patches"] = normalize(ours["patches"], MEAN_STD)
    valid = ours["patch_valid"]
    torch.testing.assert_close(ours["patches"][valid], theirs["patches"][valid], rtol=0, atol=1e-6)
    with torch.no_grad():
        want = model(theirs)
        got = model(ours)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert torch.equal(batch.labels[batch.grids.prod(-1) > 0], targets)


def test_dropped_tokens_match_timm_when_the_grid_edges_survive(timm):
    """timm infers a grid from its largest coordinate: with the last row and column kept, dropped
    tokens give the logits of timm's own collate on the same kept patches."""
    model = _model(timm, seed=1)
    tok = image_tokens(image(4, 5, 3), "d")
    rng = np.random.default_rng(0)
    keep = rng.random(len(tok)) < 0.6
    keep[-1] = True  # (y=3, x=4): the last row and the last column survive
    order = rng.permutation(np.flatnonzero(keep))
    kept = type(tok)(key="d", patches=tok.patches[order], positions=tok.positions[order], grid=tok.grid)
    batch = pack([[kept]], seq_len=24)
    ours = to_timm_naflex(batch, allow_dropped=True)
    ours["patches"] = normalize(ours["patches"], MEAN_STD)
    n = len(kept)
    raster = np.flatnonzero(keep)  # timm's own order for the same kept patches
    x = normalize(torch.from_numpy(tok.patches[raster]), MEAN_STD)[None]
    coord = torch.from_numpy(tok.positions[raster, 1:].astype(np.int64))[None]
    with torch.no_grad():
        want = model(x, patch_coord=coord, patch_valid=torch.ones(1, n, dtype=torch.bool))
        got = model(ours)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
