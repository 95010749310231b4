"""Configuration traps in the library: seq_len below the budget, stored shards of another
geometry, and ``allow_upsample`` in native mode."""

import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media import make_samples, write_shards
from patchpack.config import ConfigWarning, LoaderConfig, budget_problem, largest_example
from patchpack.decode.video.config import VideoConfig
from patchpack.drop import DropConfig
from patchpack.fit.image import FitConfig, fit_grid
from patchpack.loader import make_loader
from patchpack.offline.config import PreprocessConfig
from patchpack.offline.engines import preprocess
from patchpack.pack.config import PackConfig


def config(seq_len, max_patches=48, **kw):
    return LoaderConfig(fit=FitConfig(patch_size=8, max_patches=max_patches), pack=PackConfig(seq_len=seq_len), **kw)


def test_seq_len_below_the_budget_warns():
    with pytest.warns(ConfigWarning, match=r"seq_len=32 is below the largest example the fit allows \(48 tokens"):
        config(32)
    with pytest.warns(ConfigWarning, match=r"128 tokens: max_patches=16 per frame, frames=16, tubelet=2"):
        config(64, 16, video=VideoConfig(frames=16, tubelet=2))


@pytest.mark.parametrize(
    "kw",
    [
        dict(seq_len=48),
        dict(seq_len=8, max_patches=None),  # nothing bounds an example
        dict(seq_len=32, drop=DropConfig("constant", rate=0.5)),  # 48 tokens keep 24
        dict(seq_len=64, max_patches=16, video=VideoConfig(frames=16, tubelet=2, max_tokens=64)),
        dict(seq_len=64, max_patches=16, video=VideoConfig(frames=None, fps=2.0)),  # every frame: unbounded
    ],
)
def test_configs_that_fit_do_not_warn(kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        config(**kw)


def test_truncate_and_eval_are_not_traps():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        LoaderConfig(fit=FitConfig(max_patches=256), pack=PackConfig(seq_len=64, oversize="truncate"))
        LoaderConfig().with_overrides(seq_len=64, max_patches=48)  # both at once: no warning in between
    cfg = LoaderConfig(fit=FitConfig(patch_size=8, max_patches=48), pack=PackConfig(seq_len=48),
                       drop=DropConfig("constant", rate=0.5), training=False)
    assert largest_example(cfg) == 48 and budget_problem(cfg) is None


def test_largest_example():
    assert largest_example(LoaderConfig()) == 256
    video = VideoConfig(frames=5, tubelet=2)  # rounded up to 6 frames: 3 tubelet steps
    assert largest_example(config(1024, 16, video=video)) == 3 * 16
    assert largest_example(config(1024, 16, video=VideoConfig(frames=5, tubelet=2, rounding="down"))) == 2 * 16


# -- stored shards -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    root = tmp_path_factory.mktemp("stored")
    urls = write_shards(root / "tar", make_samples(10, sizes=((32, 48), (64, 64))), per_shard=5)
    cfg = PreprocessConfig(fit=FitConfig(patch_size=8, max_patches=48))
    preprocess(urls, root / "pre", cfg, progress=False)
    return root / "pre"


def test_stored_shards_of_another_patch_size_are_refused(stored):
    with pytest.raises(ValueError, match="made with patch size 8, tubelet 1; this loader asks for patch size 16"):
        make_loader(stored, seq_len=256)


def test_stored_shards_over_the_asked_budget_are_refused(stored):
    with pytest.raises(ValueError, match=r"budget of 48 patches per frame; this loader asks for max_patches=16"):
        make_loader(stored, patch_size=8, max_patches=16, seq_len=64)


def test_stored_shards_of_another_grid_multiple_are_refused(stored):
    with pytest.raises(ValueError, match="made with grid_multiple=1; this loader asks for grid_multiple=2"):
        make_loader(stored, patch_size=8, max_patches=48, seq_len=64, grid_multiple=2)


@pytest.mark.parametrize("budget", [48, 96])
def test_stored_shards_within_the_asked_budget_load(stored, budget):
    loader = make_loader(stored, patch_size=8, max_patches=budget, seq_len=128, batch_size=2)
    grids = [g for b in loader for g in b.grids.view(-1, 3).tolist() if g[0]]
    assert len(grids) == 10 and loader.stats.errors == 0
    assert max(h * w for _, h, w in grids) <= 48


# -- allow_upsample in native mode --------------------------------------------------------------------


def test_native_allow_upsample_fills_the_budget():
    assert fit_grid(40, 80, FitConfig(patch_size=16, max_patches=64)) == (2, 5)
    assert fit_grid(40, 80, FitConfig(patch_size=16, max_patches=64, allow_upsample=True)) == (5, 11)
    # no budget: nothing to fill, the source size is kept
    assert fit_grid(40, 80, FitConfig(patch_size=16, max_patches=None, allow_upsample=True)) == (2, 5)
    # a source above the budget is shrunk exactly as without the flag
    big = (3000, 4000)
    assert fit_grid(*big, FitConfig(max_patches=256, allow_upsample=True)) == fit_grid(*big, FitConfig(max_patches=256))


@settings(max_examples=200, deadline=None)
@given(h=st.integers(1, 3000), w=st.integers(1, 3000), p=st.sampled_from([8, 14, 16]), budget=st.integers(1, 1024))
def test_native_allow_upsample_within_budget_and_never_fewer_tokens(h, w, p, budget):
    up = fit_grid(h, w, FitConfig(patch_size=p, max_patches=budget, allow_upsample=True))
    plain = fit_grid(h, w, FitConfig(patch_size=p, max_patches=budget))
    assert up[0] * up[1] <= budget
    assert up[0] * up[1] >= plain[0] * plain[1]  # never fewer tokens than without the flag
    if max(h, w) <= 4 * min(h, w) and budget >= 16:  # moderate aspect: the budget is at least half used
        assert up[0] * up[1] >= budget // 2


def test_a_batch_larger_than_the_machine_is_refused_in_one_line(monkeypatch):
    import patchpack.config as config_module
    from patchpack.config import LoaderConfig

    monkeypatch.setattr(config_module, "_physical_memory", lambda: 8 * 1024 * 768)
    ok = LoaderConfig().with_overrides(seq_len=1024, batch_size=8)  # exactly the memory: accepted
    assert ok.batch_bytes == 8 * 1024 * 768
    with pytest.raises(ValueError, match=r"one batch would hold 0.0 GiB of patches \(batch_size=9 x seq_len=1024 x 768 "
                                         r"bytes per token\), more than this machine's 0.0 GiB of memory"):
        LoaderConfig().with_overrides(seq_len=1024, batch_size=9)
    monkeypatch.setattr(config_module, "_physical_memory", lambda: None)  # unknown: not checked
    assert LoaderConfig().with_overrides(seq_len=10**8).pack.seq_len == 10**8


def test_an_unknown_option_suggests_the_close_names():
    with pytest.raises(TypeError, match=r"unknown loader option 'seq_lenn'; did you mean 'seq_len'\?"):
        LoaderConfig().with_overrides(seq_lenn=10)
    with pytest.raises(TypeError, match=r"'image__max_pixel'; did you mean 'image__max_pixels'"):
        LoaderConfig().with_overrides(image__max_pixel=5)
    with pytest.raises(TypeError, match=r"^unknown loader option 'zzz'$"):
        LoaderConfig().with_overrides(zzz=1)


def test_a_loader_over_paths_that_all_do_not_exist_fails_at_once(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such file or folder: .*nope-0.tar \(nor any of the other 2"):
        make_loader(str(tmp_path / "nope-{0..2}.tar"))
    good = write_shards(tmp_path / "ok", make_samples(3), per_shard=3)
    loader = make_loader([str(tmp_path / "nope.tar"), *good], seq_len=256, patch_size=8, max_patches=64)
    assert sum(b.num_examples for b in loader) == 3  # one missing among others: a record
    assert [(e.kind, e.key) for e in loader.errors] == [("unreadable", str(tmp_path / "nope.tar"))]
