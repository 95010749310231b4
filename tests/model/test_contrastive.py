from types import SimpleNamespace

import numpy as np
import pytest
import torch

from patchpack.loader.batch import collate
from patchpack.model import NaViTConfig, PosEmbConfig, TokenLearnerConfig
from patchpack.model.contrastive import TwoTower, TwoTowerConfig, contrastive_step
from patchpack.model.segments import real_slots
from patchpack.model.text import TextConfig
from patchpack.tokenize import Tokens, patchify

P, VOCAB, T = 4, 30, 6


def _ex(key, h, w, seed):
    rng = np.random.default_rng(seed)
    patches, positions = patchify(rng.integers(0, 256, (h * P, w * P, 3), dtype=np.uint8), P)
    return Tokens(key, patches, positions, (1, h, w), seed % 3)


EXAMPLES = {"a": _ex("a", 3, 5, 1), "b": _ex("b", 6, 1, 2), "c": _ex("c", 2, 2, 3), "d": _ex("d", 1, 1, 4)}
CAPTIONS = {k: [1 + (i * 7 + j * 3) % (VOCAB - 1) for j in range(2 + i)] for i, k in enumerate(EXAMPLES)}

VARIANTS = {
    "mean": dict(pool="mean"),
    "map": dict(pool="map", posemb=PosEmbConfig(kind="fourier")),
    "tokenlearner": dict(token_learner=TokenLearnerConfig(num_tokens=2, bottleneck=8, at_layer=1)),
}


def _model(seed=0, attention="sdpa", **image):
    torch.manual_seed(seed)
    cfg = TwoTowerConfig(
        image=NaViTConfig(patch_size=P, dim=32, depth=2, heads=2, attention=attention, max_example_tokens=15, **image),
        text=TextConfig(vocab_size=VOCAB, text_len=8, dim=32, depth=1, heads=2),
        embed_dim=16,
    )
    return TwoTower(cfg).eval()


def _batch(rows, seq_len=32, e=4, captions=CAPTIONS):
    """A packed batch with text_ids / text_mask [B, E, T] beside the image tensors (None: no caption)."""
    batch = collate([[EXAMPLES[k] for k in r] for r in rows], seq_len, e)
    ids = torch.zeros(len(rows), e, T, dtype=torch.int32)
    mask = torch.zeros(len(rows), e, T, dtype=torch.bool)
    for b, r in enumerate(rows):
        for j, k in enumerate(r):
            if captions.get(k) is not None:
                ids[b, j, : len(captions[k])] = torch.tensor(captions[k])
                mask[b, j, : len(captions[k])] = True
    batch.text_ids, batch.text_mask = ids, mask
    return batch


LAYOUTS = [[["b", "a"]], [["c", "d", "a"], ["a"]], [["d", "a", "b"], ["c", "b", "d"]]]


@pytest.mark.parametrize("attention", ["sdpa", "window"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_image_embeddings_equal_each_image_embedded_alone(variant, attention):
    model = _model(attention=attention, **VARIANTS[variant])
    with torch.no_grad():
        for probe in ("a", "b"):
            alone = model.encode_image(_batch([[probe]], seq_len=15, e=1))[0, 0]
            for rows in LAYOUTS:
                batch = _batch(rows)
                emb = model.encode_image(batch)
                for b, keys in enumerate(batch.sample_keys):
                    for j, k in enumerate(keys):
                        if k == probe:
                            torch.testing.assert_close(emb[b, j], alone, atol=1e-5, rtol=0)
                assert torch.equal(emb[~real_slots(batch.grids)], torch.zeros_like(emb[~real_slots(batch.grids)]))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_no_gradient_crosses_examples_in_the_image_tower(variant):
    model = _model(**VARIANTS[variant]).train()
    batch = _batch([["b", "a", "c"]])
    patches = batch.patches.float().requires_grad_(True)
    emb = model.encode_image(SimpleNamespace(patches=patches, segment_ids=batch.segment_ids,
                                             positions=batch.positions, grids=batch.grids))
    (emb[0, 1] * torch.randn(16)).sum().backward()
    g = patches.grad[0].abs().sum(-1)
    seg = batch.segment_ids[0]
    assert g[seg == 2].sum() > 0
    assert g[seg != 2].max() == 0


def test_pairs_are_the_real_slots_with_a_caption_in_row_order():
    model = _model()
    captions = dict(CAPTIONS, c=None)  # "c" has no caption
    batch = _batch([["c", "a"], ["b", "d", "c"]], captions=captions)
    with torch.no_grad():
        out = model(batch)
        emb = model.encode_image(batch)
        text = model.encode_text(batch.text_ids, batch.text_mask)
    assert out.pairs.tolist() == [[False, True, False, False], [True, True, False, False]]
    assert out.image.shape == out.text.shape == (3, 16)
    torch.testing.assert_close(out.image, torch.stack([emb[0, 1], emb[1, 0], emb[1, 1]]))
    torch.testing.assert_close(out.text, torch.stack([text[0, 1], text[1, 0], text[1, 1]]), atol=1e-6, rtol=0)
    norms = torch.cat([out.image, out.text]).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones(6))
    assert out.scale.item() == pytest.approx(10.0) and out.bias.item() == pytest.approx(-10.0)


@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
def test_a_step_reaches_every_parameter(loss):
    model = _model(**VARIANTS["tokenlearner"]).train()
    value = contrastive_step(model, _batch(LAYOUTS[2]), loss=loss)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    unused = {n for n, p in model.named_parameters() if p.grad is None}
    assert unused == (set() if loss == "sigmoid" else {"logit_bias"})  # the softmax loss has no bias


def test_the_chunked_step_equals_the_full_step():
    model = _model().train()
    batch = _batch(LAYOUTS[2] + LAYOUTS[1])
    full = contrastive_step(model, batch)
    full.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    chunked = contrastive_step(model, batch, chunk=2)
    chunked.backward()
    torch.testing.assert_close(chunked, full)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], atol=1e-6, rtol=1e-4)


def test_training_pulls_pairs_together():
    model = _model().train()
    batch = _batch(LAYOUTS[2] + LAYOUTS[1])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = contrastive_step(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_a_batch_without_captions_is_one_line():
    model = _model()
    batch = collate([[EXAMPLES["a"]]], 16, 1)
    with pytest.raises(ValueError, match="no text_ids.*tokenizer") as err:
        contrastive_step(model, batch)
    assert "\n" not in str(err.value)


def test_config_round_trip():
    cfg = _model(**VARIANTS["tokenlearner"]).cfg
    again = TwoTowerConfig.from_dict(cfg.to_dict())
    assert again == cfg and isinstance(again.image.token_learner, TokenLearnerConfig)
    assert isinstance(again.build(), TwoTower)
    with pytest.raises(ValueError, match="init_scale"):
        TwoTowerConfig(init_scale=1000.0)


def test_readme_example_tokenizer_and_siglip2_text_tower(tmp_path):
    """The README's example: a tokenizer trained on the demo's captions and class prompts (no download),
    wrapped for transformers, fixed-length ids [B, E, T] flattened over the real slots into a Siglip2 text
    model; the same tokenizer builds the zero-shot prompts."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    import webdataset as wds
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    from patchpack.text import tokenize_texts
    from patchpack.model.retrieval import ClassPrompts, class_prompts
    from patchpack.synth import CLASS_WORDS, make_dataset

    info = make_dataset(tmp_path / "data", n_images=24, n_videos=0, seed=0, shard_size=100)
    captions = [s["txt"].decode() for s in wds.WebDataset(info["urls"], shardshuffle=False)]
    prompts = class_prompts([CLASS_WORDS[name] for name in info["class_names"]])

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = captions + [p for ps in prompts for p in ps]
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[EOS]"]))
    tok.post_processor = processors.TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", 2)])
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                  eos_token="[EOS]")

    text_len = 32
    texts = [[captions[0], captions[1], None], [captions[2], None, None]]  # batch.texts: None for empty slots
    ids, mask, _, truncated = tokenize_texts(texts, hf_tok, text_len)  # what the loader does with tokenizer=hf_tok
    text_ids, text_mask = torch.from_numpy(ids), torch.from_numpy(mask)  # batch.text_ids / text_mask [B, E, T]
    assert text_ids.shape == (2, 3, text_len) and truncated == 0
    grids = torch.tensor([[[1, 2, 3], [1, 4, 4], [0, 0, 0]], [[1, 1, 5], [0, 0, 0], [0, 0, 0]]])
    real = real_slots(grids)

    config = transformers.Siglip2TextConfig(vocab_size=hf_tok.vocab_size, hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=1, num_attention_heads=2,
                                            max_position_embeddings=text_len, projection_size=16,
                                            pad_token_id=hf_tok.pad_token_id, eos_token_id=hf_tok.eos_token_id)
    siglip_text = transformers.Siglip2TextModel(config).eval()
    with torch.no_grad():
        out = siglip_text(input_ids=text_ids[real].long(), attention_mask=text_mask[real].long())
    assert out.last_hidden_state.shape == (3, text_len, 32)
    assert out.pooler_output.shape == (3, 16)
    assert (text_ids[real] == hf_tok.eos_token_id).any(-1).all()  # no caption was cut: each ends with [EOS]

    zero_shot = ClassPrompts.build(prompts, hf_tok, text_len)
    assert zero_shot.num_classes == len(info["class_names"]) and zero_shot.text_ids.shape[1] == text_len
    assert hf_tok.unk_token_id not in zero_shot.text_ids.unique().tolist()
