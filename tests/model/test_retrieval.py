import itertools

import pytest
import torch
import torch.nn.functional as F

from patchpack.model.retrieval import (
    ClassPrompts, chance_recall, class_prompts, evaluate_contrastive, recall_at_k, text_groups, zero_shot_accuracy,
)


def _unit(x):
    return F.normalize(torch.as_tensor(x, dtype=torch.float32), dim=-1)


def test_recall_of_perfect_and_of_shifted_embeddings():
    image = _unit(torch.eye(6))
    assert recall_at_k(image, image, ks=(1, 5)) == {
        "image_to_text_r1": 1.0, "text_to_image_r1": 1.0, "image_to_text_r5": 1.0, "text_to_image_r5": 1.0}
    # text i sits nearest image i + 1 (and second nearest image i): recall@1 0, recall@2 1
    text = _unit(torch.roll(torch.eye(6), 1, 0) + 0.5 * torch.eye(6))
    got = recall_at_k(image, text, ks=(1, 2))
    assert got["image_to_text_r1"] == 0.0 and got["text_to_image_r1"] == 0.0
    assert got["image_to_text_r2"] == 1.0 and got["text_to_image_r2"] == 1.0


def test_identical_captions_are_one_text():
    """Images 0 and 1 have the same caption: ranking either copy first is a hit, both ways."""
    image = _unit([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    text = _unit([[0.9, 0.1], [0.9, 0.1], [0.0, 1.0]])
    ids = torch.tensor([[5, 6, 0], [5, 6, 0], [7, 0, 0]])
    mask = ids > 0
    groups = text_groups(ids, mask)
    assert groups[0] == groups[1] != groups[2]
    assert recall_at_k(image, text, (1,))["image_to_text_r1"] < 1.0  # without groups, a duplicate is a miss
    got = recall_at_k(image, text, (1,), groups)
    assert got == {"image_to_text_r1": 1.0, "text_to_image_r1": 1.0}


def test_text_groups_ignore_padding_ids():
    ids = torch.tensor([[3, 4, 0], [3, 4, 9], [3, 5, 0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    g = text_groups(ids, mask)
    assert g[0] == g[1] != g[2]


@pytest.mark.parametrize("groups", [[0, 1, 2, 3, 4], [0, 0, 1, 2, 2], [0, 0, 0, 1, 1]])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_chance_recall_is_a_random_rankings_recall(groups, k):
    """Averaged over every ranking of 5 texts, the recall a query gets is chance_recall."""
    g = torch.tensor(groups)
    n = len(groups)
    hits = [sum(any(g[j] == g[i] for j in perm[:k]) for i in range(n)) / n for perm in itertools.permutations(range(n))]
    assert chance_recall(g, k) == pytest.approx(sum(hits) / len(hits))
    if len(set(groups)) == n:
        assert chance_recall(g, k) == pytest.approx(k / n)


def test_class_prompts():
    prompts = class_prompts(["horizontal stripes", ("rings", "concentric circles")], ("a photo of {}.", "{}"))
    assert prompts == [["a photo of horizontal stripes.", "horizontal stripes"],
                       ["a photo of rings.", "rings", "a photo of concentric circles.", "concentric circles"]]
    with pytest.raises(ValueError, match="template"):
        class_prompts(["x"], ("a photo",))
    with pytest.raises(ValueError, match="phrasing"):
        class_prompts([()])


def test_zero_shot_accuracy():
    classes = _unit(torch.eye(3))
    image = _unit([[1.0, 0.1, 0.0], [0.0, 0.2, 1.0], [0.9, 1.0, 0.0]])
    assert zero_shot_accuracy(image, classes, torch.tensor([0, 2, 1])) == 1.0
    assert zero_shot_accuracy(image, classes, torch.tensor([0, 2, 0])) == pytest.approx(2 / 3)


def test_evaluate_contrastive_on_packed_batches():
    from test_contrastive import CAPTIONS, LAYOUTS, _batch, _model

    model = _model().train()
    batches = [_batch(LAYOUTS[1], captions=dict(CAPTIONS, d=None)), _batch(LAYOUTS[2])]
    prompts = ClassPrompts(torch.tensor([[1, 2, 0], [3, 0, 0], [4, 5, 6], [7, 0, 0]], dtype=torch.int32),
                           torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]], dtype=torch.bool),
                           torch.tensor([0, 0, 1, 2]), 3)
    got = evaluate_contrastive(model, batches, prompts)
    assert model.training  # the mode is restored
    assert got["examples"] == 10 and got["pairs"] == 9  # one "d" has no caption
    for key in ("image_to_text_r1", "text_to_image_r1", "image_to_text_r5", "text_to_image_r5",
                "zero_shot_accuracy"):
        assert 0.0 <= got[key] <= 1.0
    assert got["zero_shot_chance"] == pytest.approx(1 / 3)
    # examples "a" and "b" appear twice with one caption each: groups of 2, so chance is above k / N
    assert got["chance_r1"] > 1 / 9
    assert set(evaluate_contrastive(model, batches)) == {"examples", "pairs", "image_to_text_r1", "text_to_image_r1",
                                                         "image_to_text_r5", "text_to_image_r5", "chance_r1",
                                                         "chance_r5"}


def test_class_prompts_are_tokenized_as_the_loader_tokenizes_captions():
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    from patchpack.text import tokenize_texts

    words = [("horizontal stripes",), ("concentric rings", "a bullseye")]
    prompts = class_prompts(words)
    tok = tokenizers.Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([p for ps in prompts for p in ps], trainers.WordLevelTrainer(special_tokens=["[PAD]",
                                                                                                         "[UNK]"]))
    encode = lambda text: tok.encode(text).ids  # noqa: E731  (str -> list[int], as the loader takes)
    built = ClassPrompts.build(prompts, encode, text_len=4)
    assert built.num_classes == 2 and built.classes.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert built.text_ids.shape == built.text_mask.shape == (9, 4)
    ids, mask, _, _ = tokenize_texts([[prompts[1][3]]], encode, 4)  # a caption with these words, in a batch
    assert torch.equal(built.text_ids[6], torch.from_numpy(ids[0, 0]))
    assert torch.equal(built.text_mask[6], torch.from_numpy(mask[0, 0]))
