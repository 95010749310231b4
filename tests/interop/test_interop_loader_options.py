"""Trainer-facing loader behaviour: len(loader), persistent_workers, drop_last."""

import pytest

import patchpack
from media import make_samples, write_shards

SMALL = dict(seq_len=48, patch_size=8, max_patches=24, batch_size=3, buffer_size=6, max_per_seq=4)


@pytest.fixture(scope="module")
def tars(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("tars"), make_samples(40, seed=3), per_shard=10)


@pytest.fixture(scope="module")
def stored(tars, tmp_path_factory):
    from patchpack.fit.image import FitConfig
    from patchpack.offline import PreprocessConfig, preprocess

    out = tmp_path_factory.mktemp("stored")
    preprocess(tars, out, PreprocessConfig(fit=FitConfig(patch_size=8, max_patches=24)), progress=False)
    return str(out)


def keys(batches):
    return [k for b in batches for row in b.sample_keys for k in row]


@pytest.fixture(scope="module")
def stored_rows(tars, tmp_path_factory):
    """``preprocess --packed`` shards: the loader serves their stored rows as they are."""
    from patchpack.fit.image import FitConfig
    from patchpack.offline import PreprocessConfig, preprocess
    from patchpack.pack import PackConfig

    out = tmp_path_factory.mktemp("rows")
    cfg = PreprocessConfig(fit=FitConfig(patch_size=8, max_patches=24),
                           pack=PackConfig(seq_len=SMALL["seq_len"], max_per_seq=SMALL["max_per_seq"]))
    preprocess(tars, out, cfg, packed=True, progress=False)
    return str(out)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", ["examples", "rows"])
def test_len_of_patchpack_shards_is_the_batch_count(stored, stored_rows, kind, workers):
    loader = patchpack.make_loader(stored if kind == "examples" else stored_rows, num_workers=workers, **SMALL)
    assert loader.dataset.serve_stored == (kind == "rows")
    n = len(loader)
    assert n == len(list(loader)) and n > 3
    assert len(loader) == len(list(loader))  # the next pass (next epoch) is counted again


def test_len_of_tar_shards_after_counting(tars):
    loader = patchpack.make_loader(tars, **SMALL)
    with pytest.raises(TypeError, match="count_batches"):
        len(loader)
    n = loader.count_batches()
    assert len(loader) == n == len(list(loader))


def test_len_is_a_type_error_when_endless(tars):
    loader = patchpack.make_loader(tars, epochs=None, **SMALL)
    with pytest.raises(TypeError, match="endless"):
        len(loader)


def test_drop_last_drops_only_short_batches(stored):
    full = list(patchpack.make_loader(stored, num_workers=2, **SMALL))
    loader = patchpack.make_loader(stored, num_workers=2, drop_last=True, **SMALL)
    kept = list(loader)
    assert all(b.batch_size == SMALL["batch_size"] for b in kept)
    assert len(kept) == sum(b.batch_size == SMALL["batch_size"] for b in full) < len(full)
    assert len(loader) == len(kept)


def test_persistent_workers_continue_the_epochs(stored):
    plain = patchpack.make_loader(stored, num_workers=2, **SMALL)
    kept = patchpack.make_loader(stored, num_workers=2, persistent_workers=True, **SMALL)
    passes = [keys(kept) for _ in range(2)]
    assert passes[0] != passes[1]  # the second pass is the next epoch (another shard order)...
    assert passes == [keys(plain) for _ in range(2)]  # ...as without persistent workers
    assert kept.persistent_workers and kept._iterator is not None


def test_persistent_workers_refuse_a_late_resume(stored):
    loader = patchpack.make_loader(stored, num_workers=2, persistent_workers=True, **SMALL)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    list(it)
    loader.load_state_dict(state)
    with pytest.raises(RuntimeError, match="before the first pass"):
        next(iter(loader))


def test_persistent_workers_resume_given_before_the_first_pass(stored):
    ref = patchpack.make_loader(stored, num_workers=2, **SMALL)
    it = iter(ref)
    head = [next(it) for _ in range(2)]
    state = ref.state_dict()
    rest = list(it)
    loader = patchpack.make_loader(stored, num_workers=2, persistent_workers=True, **SMALL)
    loader.load_state_dict(state)
    assert head and keys(loader) == keys(rest)  # the resumed pass...
    assert keys(loader) == keys(ref)  # ...then the next epoch, with the same workers kept
