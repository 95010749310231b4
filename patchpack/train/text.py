"""Text for contrastive training without a download: a tokenizer trained on the training captions,
and the class names that make zero-shot prompts.

* :class:`CaptionTokenizer`: a word-level tokenizer built with the ``tokenizers`` library
  (lower case, split on whitespace and punctuation, ``[PAD]`` = 0, ``[UNK]`` = 1, ``[EOS]`` = 2
  appended to each text) from the captions the loader reads first (:func:`read_captions`).
  It is a plain callable ``str -> list[int]``, so the loader's workers take it (it pickles as
  its JSON), and it is saved in the run folder as ``tokenizer.json``.
* :func:`read_class_words`: class names (and other phrasings of each class) from a file;
  :func:`find_class_words` looks for ``classes.json`` beside the shards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["CaptionTokenizer", "read_captions", "read_class_words", "find_class_words", "CLASSES_FILE"]

#: the class-names file :func:`find_class_words` looks for beside the shards
CLASSES_FILE = "classes.json"
_SPECIAL = ("[PAD]", "[UNK]", "[EOS]")


class CaptionTokenizer:
    """A ``tokenizers`` word-level tokenizer as a picklable callable ``str -> list[int]``.

    Build one with :meth:`train`; :meth:`save` / :meth:`load` write and read the ``tokenizers``
    JSON (``Tokenizer.from_file`` reads it too).
    """

    def __init__(self, spec: str) -> None:
        from tokenizers import Tokenizer

        self._spec = spec
        self._tok = Tokenizer.from_str(spec)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 1) -> "CaptionTokenizer":
        """A tokenizer whose vocabulary is the ``vocab_size`` most frequent words of ``texts``."""
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(_SPECIAL))
        tok.train_from_iterator(texts, trainer)
        tok.post_processor = processors.TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", 2)])
        return cls(tok.to_str())

    @classmethod
    def load(cls, path: str | Path) -> "CaptionTokenizer":
        return cls(Path(path).read_text(encoding="utf-8"))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self._spec, encoding="utf-8")
        return path

    def to_str(self) -> str:
        """The ``tokenizers`` JSON."""
        return self._spec

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def __call__(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self._spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["spec"])

    def __repr__(self) -> str:
        return f"CaptionTokenizer(vocab_size={self.vocab_size})"


def read_captions(urls: Sequence[str], field: str = "txt", limit: int = 20_000) -> list[str]:
    """The text field ``field`` of the first ``limit`` samples of ``urls`` (in shard order; samples
    that cannot be read or lack the field are passed over)."""
    from ..errors import SampleError
    from ..sources import Sample, StoredSample, read_shard
    from ..sources.fields import field_name, sample_field

    out: list[str] = []
    for url in urls:
        for rec in read_shard(url):
            if len(out) >= limit:
                return out
            if isinstance(rec, StoredSample):
                text = (getattr(rec.tokens, "fields", None) or {}).get(field_name(field))
            elif isinstance(rec, Sample):
                try:
                    text = sample_field(rec, field.removesuffix("?") + "?")
                except SampleError:
                    text = None
            else:
                continue
            if text:
                out.append(text)
    return out


def read_class_words(path: str | Path) -> list[list[str]]:
    """Per class id, its phrasings: from a JSON file (a list whose item ``i`` is class ``i``'s name
    or list of phrasings, or an object ``{name: [phrasings]}`` in class order) or a text file (one
    class a line, phrasings separated by ``|``).

    Raises:
        ValueError: the file holds no class, or an entry that is not text (one line).
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        items = list(data.values()) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a JSON list of class names (or of lists of phrasings)")
        classes = [[item] if isinstance(item, str) else item for item in items]
    else:
        classes = [[w.strip() for w in line.split("|") if w.strip()] for line in text.splitlines() if line.strip()]
    bad = next((c for c in classes if not isinstance(c, list) or not c or not all(isinstance(w, str) for w in c)), None)
    if not classes or bad is not None:
        raise ValueError(f"{path}: every class needs a name or a list of phrasings (got {bad!r})")
    return classes


def find_class_words(urls: Sequence[str]) -> tuple[list[list[str]], Path] | None:
    """Class phrasings from :data:`CLASSES_FILE` in the folder of the first local shard (or in the
    folder given as a source), with the file's path; ``None`` when there is none."""
    for url in urls[:1]:
        path = Path(url)
        folder = path if path.is_dir() else path.parent
        candidate = folder / CLASSES_FILE
        if candidate.is_file():
            return read_class_words(candidate), candidate
    return None
