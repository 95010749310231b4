"""What preprocessing stores: :class:`PreprocessConfig` (the offline counterpart of the loader config)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..config import LoaderConfig
from ..decode import tubelet_of
from ..decode.image import ImageConfig
from ..drop import DropConfig
from ..fit import FitConfig
from ..pack import PackConfig
from ..sources.tarscan import DEFAULT_MAX_MEMBER_BYTES
from ..text import tokenizer_name

__all__ = ["PreprocessConfig", "ENGINES"]

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class PreprocessConfig:
    """What the offline shards hold.

    Attributes:
        fit: resolution policy (patch size, budget, sampled modes).
        image: image decode options.
        video: video decode options (a :class:`patchpack.decode.video.VideoConfig`);
            ``None`` treats video members as unsupported.
        seed: seeds every random choice (sampled resolutions, and with ``packed`` the
            drop rates and dropped tokens). Each example uses the loader's generators
            of epoch 0 (:func:`patchpack.rng.example_rng`), so the stored examples
            are the ones the online loader makes in its first epoch.
        label_field: ``"cls"`` (text integer member) or ``"json:<name>"`` (a key of the
            ``json`` member), as for the loader; missing -> unlabelled.
        fields: text fields stored with each example, as the loader's ``fields``.
        field_max_bytes: largest field read (bytes), as the loader's.
        tokenizer: stores the token ids of the text field (the loader's ``text_name``) beside
            its text, cut to ``text_len`` (as the loader's ``tokenizer``); ``None``: text only.
        text_len: tokens kept per text.
        packed: store packed sequences instead of examples.
        pack, drop: packing and dropping policy for ``packed`` shards.
        rows_per_batch: Arrow record batch size in rows.
        max_member_bytes: largest input tar member or folder file read (bytes, checked before
            reading; larger ones are ``oversize-member`` records), as the loader's option.
            Recorded in the manifest only when not the default.
        image_column, remote_retries, follow_outside_links: how inputs are read, as the loader's
            options (parquet image column, retries of remote reads, folder links leaving the root).
    """

    fit: FitConfig = field(default_factory=FitConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    video: Any = None
    seed: int = 0
    label_field: str = "cls"
    fields: tuple[str, ...] = ()
    field_max_bytes: int = 64 * 2**10
    tokenizer: Any = None
    text_len: int = 64
    packed: bool = False
    pack: PackConfig = field(default_factory=PackConfig)
    drop: DropConfig = field(default_factory=DropConfig)
    rows_per_batch: int = 64
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    image_column: str | None = None
    remote_retries: int = 5
    follow_outside_links: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", (self.fields,) if isinstance(self.fields, str) else tuple(self.fields))
        self.loader_config()  # the same checks as the loader's (label field, fields, member cap)

    def loader_config(self) -> LoaderConfig:
        """The loader configuration whose first epoch, without dropping, these shards store."""
        return LoaderConfig(fit=self.fit, image=self.image, video=self.video, seed=self.seed,
                            label_field=self.label_field, fields=self.fields, field_max_bytes=self.field_max_bytes,
                            max_member_bytes=self.max_member_bytes, training=False, pack=self.pack,
                            tokenizer=self.tokenizer, text_len=self.text_len, image_column=self.image_column,
                            remote_retries=self.remote_retries, follow_outside_links=self.follow_outside_links)

    @property
    def tubelet(self) -> int:
        return tubelet_of(self.video)

    @classmethod
    def from_loader(cls, loader_cfg: LoaderConfig, **overrides: Any) -> "PreprocessConfig":
        """The offline counterpart of a loader configuration (same fit, decode, labels, seed)."""
        kw = dict(
            fit=loader_cfg.fit, image=loader_cfg.image, video=loader_cfg.video, seed=loader_cfg.seed,
            label_field=loader_cfg.label_field, pack=loader_cfg.pack, drop=loader_cfg.drop,
            max_member_bytes=loader_cfg.max_member_bytes, fields=loader_cfg.fields,
            field_max_bytes=loader_cfg.field_max_bytes, tokenizer=loader_cfg.tokenizer, text_len=loader_cfg.text_len,
            image_column=loader_cfg.image_column, remote_retries=loader_cfg.remote_retries,
            follow_outside_links=loader_cfg.follow_outside_links,
        )
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict:
        """JSON-ready form (recorded in the manifest and the shard metadata)."""
        d = dataclasses.asdict(dataclasses.replace(self, tokenizer=None))
        d["tokenizer"] = None if self.tokenizer is None else tokenizer_name(self.tokenizer)
        d["drop"]["rate_fn"] = None if self.drop.rate_fn is None else tokenizer_name(self.drop.rate_fn)
        d["video"] = dataclasses.asdict(self.video) if dataclasses.is_dataclass(self.video) else self.video
        if self.max_member_bytes == DEFAULT_MAX_MEMBER_BYTES:  # manifests of runs before the option match
            d.pop("max_member_bytes")
        for name, default in (("image_column", None), ("remote_retries", 5), ("follow_outside_links", False)):
            if d[name] == default:  # reading options change no stored example unless set
                d.pop(name)
        if not self.fields:  # manifests of runs without fields match
            for name in ("fields", "field_max_bytes", "tokenizer", "text_len"):
                d.pop(name)
        if not self.packed:  # packing options do not affect example shards
            d.pop("pack")
            d.pop("drop")
        return json.loads(json.dumps(d, default=list))

