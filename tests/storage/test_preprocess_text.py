"""``preprocess`` stores each example's label set, text fields and (with a tokenizer) token ids,
in both shard kinds, and they read back exactly as the samples held them."""

from __future__ import annotations

import json

import pytest
from media import image_bytes

from patchpack.fit import FitConfig
from patchpack.offline import PreprocessConfig, preprocess
from patchpack.pack import PackConfig
from patchpack.storage.format import TextIdsSpec
from patchpack.storage.manifest import list_shards
from patchpack.storage.reader import ShardReader, iter_shard_examples
from patchpack.text import tokenizer_name

TEXT_LEN = 6


def char_ids(text: str) -> list[int]:
    """A tokenizer: one id per character."""
    return [ord(c) % 251 for c in text]


def _samples() -> list[dict]:
    out = []
    for i in range(9):
        s = {"__key__": f"s{i:02d}", "png": image_bytes(8 * (2 + i % 3), 8 * (3 + i % 2), "PNG", seed=i),
             "cls": " ".join(str(v) for v in [(i,), (i, i + 3), ()][i % 3]).encode()}
        if i % 4:
            s["txt"] = f"caption {i} \u2713".encode()
        out.append(s)
    return out


@pytest.mark.parametrize("packed", [False, True])
def test_preprocess_stores_label_sets_fields_and_ids(tmp_path, packed):
    from media import write_shards

    src = write_shards(tmp_path / "src", _samples(), per_shard=9)
    out = tmp_path / "out"
    cfg = PreprocessConfig(fit=FitConfig(patch_size=8, max_patches=48), fields=("txt?",), tokenizer=char_ids,
                           text_len=TEXT_LEN, packed=packed, pack=PackConfig(seq_len=64, max_per_seq=4))
    preprocess(src, out, cfg, progress=False)
    (shard,) = list_shards(out)
    reader = ShardReader(shard)
    assert reader.fields == ("txt",) and reader.version == 2
    assert reader.text == TextIdsSpec(tokenizer_name(char_ids), TEXT_LEN, ("txt",), None)
    want = {s["__key__"]: s for s in _samples()}
    got = {t.key: t for t in iter_shard_examples(shard)}
    assert sorted(got) == sorted(want)
    for key, tok in got.items():
        text = want[key].get("txt", b"").decode() or None
        labels = tuple(int(v) for v in want[key]["cls"].split())
        assert tok.fields == {"txt": text} and tok.label_set == labels
        ids = tok.text_ids["txt"]
        assert (ids is None and text is None) or ids.tolist() == char_ids(text)[:TEXT_LEN]
    assert json.loads(reader.schema.metadata[b"patchpack.fields"]) == ["txt"]
