"""A procedural labelled dataset with natural variety in size and aspect ratio.

Nothing is downloaded: every sample is drawn with numpy and encoded with Pillow
(JPEG or PNG) or PyAV (H.264/MPEG-4 in MP4), then written as webdataset shards
with :class:`webdataset.ShardWriter` (members ``__key__``, ``jpg``/``png``/``mp4``,
``cls``, ``json``, ``txt``).

Image classes (:data:`IMAGE_CLASSES`): a texture inside a random ellipse on a
noisy background, the class being the texture: stripes in one of four
orientations (with a few degrees of jitter), concentric rings or a checkerboard,
each with random colours, period and phase. Video classes
(:data:`VIDEO_CLASSES`): a grating drifting over a gradient background, the class
being the direction of motion. Class ids: image classes first, then video classes.

Captions (the ``txt`` member, :func:`caption`): words for what the pixels show, never the
class id or name: the texture and its orientation, or the direction of motion
(:data:`CLASS_WORDS`, several phrasings a class), the colours of the pattern and of what
surrounds it, the shape of the frame and of the oval. Templates and phrasings are drawn per
sample, so captions vary within a class, but each follows from the pixels (the colours
are named from the colours drawn, the backdrop's from the pixels around the oval). A
caption draws from its own seeded stream: the pixels, sizes and encodings are the same as
without captions.

Sizes: the geometric-mean side is log-uniform in ``[min_side, max_side]`` (32..256
px by default) and the aspect ratio log-uniform in ``[1/max_aspect, max_aspect]``.
Everything is deterministic for a seed (each sample uses ``rng([seed, index])``).
"""

from __future__ import annotations

import colorsys
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import av
import numpy as np
import webdataset as wds
from PIL import Image

__all__ = [
    "SynthConfig", "IMAGE_CLASSES", "VIDEO_CLASSES", "CLASS_WORDS", "Scene", "make_dataset", "draw_image", "draw_video",
    "draw_image_scene", "draw_video_scene", "caption", "colour_name", "encode_video",
]

IMAGE_CLASSES = ("stripes-horizontal", "stripes-vertical", "stripes-diagonal", "stripes-antidiagonal", "rings", "checker")
VIDEO_CLASSES = ("motion-left", "motion-right", "motion-up", "motion-down")
_ANGLES = {"stripes-horizontal": 90.0, "stripes-vertical": 0.0, "stripes-diagonal": 45.0, "stripes-antidiagonal": 135.0}

#: Phrasings of what each class shows, for captions and zero-shot prompts (never the class name).
CLASS_WORDS: dict[str, tuple[str, ...]] = {
    "stripes-horizontal": ("horizontal stripes", "horizontal bands", "stripes lying flat"),
    "stripes-vertical": ("vertical stripes", "vertical bands", "upright stripes"),
    "stripes-diagonal": ("diagonal stripes rising to the right", "stripes slanting up to the right",
                         "bands running from lower left to upper right"),
    "stripes-antidiagonal": ("diagonal stripes falling to the right", "stripes slanting down to the right",
                             "bands running from upper left to lower right"),
    "rings": ("concentric rings", "concentric circles", "a bullseye of rings"),
    "checker": ("a checkerboard", "a checkered pattern", "a grid of alternating squares"),
    "motion-left": ("stripes moving left", "a grating drifting to the left", "bands sliding leftward"),
    "motion-right": ("stripes moving right", "a grating drifting to the right", "bands sliding rightward"),
    "motion-up": ("stripes moving up", "a grating drifting upward", "bands sliding upward"),
    "motion-down": ("stripes moving down", "a grating drifting downward", "bands sliding downward"),
}
_IMAGE_TEMPLATES = (
    "{tex} in {ink} and {paper}",
    "{frame} of {tex} in {ink} and {paper} on {a_back} background",
    "{tex}, {ink} on {paper}, inside {oval}",
    "{oval} filled with {tex} in {ink} and {paper}, against {a_back} background",
    "{frame} showing {tex} inside {oval}; the pattern is {ink} and {paper}",
)
_VIDEO_TEMPLATES = (
    "{tex} in {ink}",
    "{frame} of {tex} in {ink} over {a_back} background",
    "{tex}, coloured {ink}, on {back}",
    "a clip of {tex}; the stripes are {ink} and the background {back}",
)
#: (upper hue limit in degrees, name)
_HUES = ((15, "red"), (40, "orange"), (65, "yellow"), (165, "green"), (195, "cyan"), (255, "blue"), (290, "purple"),
         (335, "pink"), (361, "red"))


@dataclass(frozen=True)
class Scene:
    """What a drawn sample shows, as its caption words it; each field can be read off the pixels.

    Attributes:
        kind: ``"image"`` or ``"video"``.
        class_name: the class drawn.
        height, width: frame size in pixels.
        ink: RGB of the pattern's dark colour (a video's stripes).
        paper: RGB of the pattern's light colour (images; ``None`` for videos).
        backdrop: mean RGB of the pixels around the pattern (a video's whole background).
        oval: width / height of the oval holding an image's texture (``None`` for videos).
    """

    kind: str
    class_name: str
    height: int
    width: int
    ink: tuple[float, float, float]
    paper: tuple[float, float, float] | None
    backdrop: tuple[float, float, float]
    oval: float | None = None


def colour_name(rgb: Sequence[float]) -> str:
    """A plain colour word for RGB in 0..255: black/white/greys, else a hue with "dark"/"pale"."""
    h, s, v = colorsys.rgb_to_hsv(*(min(255.0, max(0.0, float(c))) / 255 for c in rgb))
    if v < 0.18:
        return "black"
    if s < 0.2:
        return "white" if v > 0.85 else "light grey" if v > 0.6 else "grey" if v > 0.35 else "dark grey"
    hue = next(name for limit, name in _HUES if h * 360 < limit)
    if hue == "orange" and v < 0.55:
        return "brown"
    return ("dark " if v < 0.45 else "pale " if s < 0.45 and v > 0.7 else "") + hue


def _shape_word(ratio: float, wide: str, tall: str, even: str) -> str:
    return wide if ratio > 1.3 else tall if ratio < 1 / 1.3 else even


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption for ``scene``: a template and a phrasing drawn with ``rng``, the colours and shapes named."""
    image = scene.kind == "image"
    noun = str(rng.choice(("picture", "photo", "image") if image else ("video", "clip")))
    words = {
        "tex": str(rng.choice(CLASS_WORDS[scene.class_name])),
        "ink": colour_name(scene.ink),
        "back": colour_name(scene.backdrop),
        "a_back": ("an " if colour_name(scene.backdrop)[0] in "aeiou" else "a ") + colour_name(scene.backdrop),
        "frame": _shape_word(scene.width / scene.height, f"a wide {noun}", f"a tall {noun}", f"a square {noun}"),
    }
    if image:
        words["paper"] = colour_name(scene.paper or scene.backdrop)
        words["oval"] = _shape_word(scene.oval or 1.0, "a wide oval", "a tall oval", "a round patch")
    return str(rng.choice(_IMAGE_TEMPLATES if image else _VIDEO_TEMPLATES)).format(**words)



@dataclass(frozen=True)
class SynthConfig:
    """Size and encoding ranges.

    Attributes:
        min_side, max_side: range of the geometric-mean image side in pixels.
        max_aspect: aspect ratios are log-uniform in ``[1/max_aspect, max_aspect]``.
        png_fraction: share of images stored as PNG (the rest JPEG, quality 60..95).
        video_min_side, video_max_side: range of the video geometric-mean side.
        video_frames: ``(min, max)`` frame count per video.
        video_fps: frame rate written to the container.
    """

    min_side: int = 32
    max_side: int = 256
    max_aspect: float = 3.0
    png_fraction: float = 0.2
    video_min_side: int = 32
    video_max_side: int = 128
    video_frames: tuple[int, int] = (8, 16)
    video_fps: int = 8


def _size(rng: np.random.Generator, lo: int, hi: int, max_aspect: float, even: bool = False) -> tuple[int, int]:
    side = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    aspect = math.exp(rng.uniform(-math.log(max_aspect), math.log(max_aspect)))  # w / h
    h = max(8, int(round(side / math.sqrt(aspect))))
    w = max(8, int(round(side * math.sqrt(aspect))))
    if even:
        h, w = h + h % 2, w + w % 2
    return h, w


def _colours(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """``n`` random RGB colours, pairwise at least ~80 apart (so textures stay visible)."""
    out: list[np.ndarray] = []
    while len(out) < n:
        c = rng.uniform(0, 255, 3)
        if all(np.abs(c - o).sum() > 80 for o in out) or rng.random() < 0.02:
            out.append(c)
    return out


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """float ``[h, w, 3]``: a random linear colour gradient plus pixel noise."""
    c0, c1 = _colours(rng, 2)
    a = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * math.cos(a) + yy * math.sin(a)) / max(h, w)
    t = (t - t.min()) / max(1e-6, float(np.ptp(t)))
    img = c0 + (c1 - c0) * t[..., None] * rng.uniform(0.2, 0.6)
    return img + rng.normal(0, 8, (h, w, 3))


def draw_image(class_name: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``[height, width, 3]`` image of ``class_name`` (one of :data:`IMAGE_CLASSES`)."""
    return draw_image_scene(class_name, height, width, rng)[0]


def draw_image_scene(class_name: str, height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, Scene]:
    """:func:`draw_image`'s pixels (the same draws from ``rng``) and the :class:`Scene` they show."""
    if class_name not in IMAGE_CLASSES:
        raise ValueError(f"unknown image class {class_name!r}")
    h, w = height, width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = max(4.0, max(h, w) / rng.uniform(12.0, 24.0))  # 12..24 periods along the long side
    phase = rng.uniform(0, 2 * math.pi)
    if class_name in _ANGLES:
        a = math.radians(_ANGLES[class_name] + rng.uniform(-8, 8))
        pattern = np.sin(2 * math.pi * (xx * math.cos(a) + yy * math.sin(a)) / period + phase) > 0
    elif class_name == "rings":
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        pattern = np.sin(2 * math.pi * np.hypot(yy - cy, xx - cx) / period + phase) > 0
    else:  # checker, slightly rotated
        a = math.radians(rng.uniform(-10, 10))
        u = (xx * math.cos(a) + yy * math.sin(a)) / (period * 0.75)
        v = (-xx * math.sin(a) + yy * math.cos(a)) / (period * 0.75)
        pattern = (np.floor(u + phase) + np.floor(v + phase)) % 2 == 1
    fg, bg = rng.uniform(0, 110, 3), rng.uniform(145, 255, 3)  # dark on light: the texture always shows
    texture = np.where(pattern[..., None], fg, bg)
    # the texture fills a random ellipse covering most of the frame
    cy, cx = rng.uniform(0.4, 0.6) * h, rng.uniform(0.4, 0.6) * w
    ry, rx = rng.uniform(0.4, 0.7) * h, rng.uniform(0.4, 0.7) * w
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    img = np.where(inside[..., None], texture + rng.normal(0, 6, (h, w, 3)), _background(rng, h, w))
    img = np.clip(img, 0, 255).astype(np.uint8)
    backdrop = tuple(float(c) for c in img[~inside].mean(0))  # the corners always lie outside the oval
    return img, Scene("image", class_name, h, w, tuple(fg.tolist()), tuple(bg.tolist()), backdrop, rx / ry)


def draw_video(class_name: str, frames: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``[frames, height, width, 3]``: a grating drifting in the direction named by ``class_name``.

    Stripes lie across the motion axis (vertical stripes for left/right), with a
    random period of 10..24 px, colour and phase, and drift so that frames a quarter
    of the clip apart (what a 4-frame spread sample sees) are about a fifth of a
    period apart: the direction is visible inside every tubelet, as local motion.
    """
    return draw_video_scene(class_name, frames, height, width, rng)[0]


def draw_video_scene(class_name: str, frames: int, height: int, width: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, Scene]:
    """:func:`draw_video`'s frames (the same draws from ``rng``) and the :class:`Scene` they show."""
    if class_name not in VIDEO_CLASSES:
        raise ValueError(f"unknown video class {class_name!r}")
    h, w = height, width
    bg = _background(rng, h, w)
    (colour,) = _colours(rng, 1)
    period = rng.uniform(10.0, 24.0)
    step = 0.8 * period / max(1, frames)  # pixels per frame
    sign, axis = {"motion-left": (-1, 1), "motion-right": (1, 1), "motion-up": (-1, 0), "motion-down": (1, 0)}[
        class_name]
    coord = np.mgrid[0:h, 0:w].astype(np.float32)[axis]
    phase = rng.uniform(0.0, 2 * np.pi)
    out = np.empty((frames, h, w, 3), np.uint8)
    for i in range(frames):
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * (coord - sign * step * i) / period + phase)
        out[i] = np.clip(bg + wave[..., None] * (np.asarray(colour) - bg), 0, 255).astype(np.uint8)
    backdrop = tuple(float(c) for c in np.clip(bg, 0, 255).mean((0, 1)))
    return out, Scene("video", class_name, h, w, tuple(float(c) for c in colour), None, backdrop)


def _video_codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def encode_video(frames: np.ndarray, fps: int = 8) -> bytes:
    """MP4 bytes (H.264 when available, else MPEG-4 Part 2) of uint8 ``[T, H, W, 3]`` with even H, W."""
    t, h, w, _ = frames.shape
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream(_video_codec(), rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1  # deterministic output
        if stream.codec_context.name == "libx264":
            # one encoder thread, and no macroblock-tree rate control: it reads uninitialised
            # memory, so with it the same frames encoded to different bytes from run to run
            stream.options = {"crf": "18", "preset": "veryfast",
                              "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:no-mbtree=1"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def _encode_image(img: np.ndarray, rng: np.random.Generator, png_fraction: float) -> tuple[str, bytes]:
    buf = io.BytesIO()
    if rng.random() < png_fraction:
        Image.fromarray(img).save(buf, format="PNG")
        return "png", buf.getvalue()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(rng.integers(60, 96)))
    return "jpg", buf.getvalue()


def _sample(kind: str, i: int, name: str, label: int, seed: int, cfg: SynthConfig) -> dict:
    """The webdataset members of sample ``i`` of ``kind``; pixels from ``rng([seed, 0|1, i])``, its caption
    from ``rng([seed, 2, 0|1, i])``."""
    stream = 0 if kind == "image" else 1
    rng = np.random.default_rng([seed, stream, i])
    if kind == "image":
        h, w = _size(rng, cfg.min_side, cfg.max_side, cfg.max_aspect)
        pixels, scene = draw_image_scene(name, h, w, rng)
        ext, data = _encode_image(pixels, rng, cfg.png_fraction)
        meta = {"kind": kind, "class": name, "height": h, "width": w}
    else:
        h, w = _size(rng, cfg.video_min_side, cfg.video_max_side, cfg.max_aspect, even=True)
        t = int(rng.integers(cfg.video_frames[0], cfg.video_frames[1] + 1))
        frames, scene = draw_video_scene(name, t, h, w, rng)
        ext, data = "mp4", encode_video(frames, cfg.video_fps)
        meta = {"kind": kind, "class": name, "height": h, "width": w, "frames": t}
    text = caption(scene, np.random.default_rng([seed, 2, stream, i]))
    key = f"{'img' if kind == 'image' else 'vid'}{i:06d}"
    return {"__key__": key, ext: data, "cls": label, "json": json.dumps(meta), "txt": text}


def _image_classes(classes: int | Sequence[str] | None) -> list[str]:
    """The image classes ``make_dataset`` is asked for (all, the first ``n``, or named ones)."""
    if classes is None:
        return list(IMAGE_CLASSES)
    if isinstance(classes, int):
        if not 1 <= classes <= len(IMAGE_CLASSES):
            raise ValueError(f"classes must be in 1..{len(IMAGE_CLASSES)}")
        return list(IMAGE_CLASSES[:classes])
    unknown = set(classes) - set(IMAGE_CLASSES)
    if unknown:
        raise ValueError(f"unknown image classes {sorted(unknown)}; choose from {IMAGE_CLASSES}")
    return list(classes)


def make_dataset(
    out_dir: str | Path,
    n_images: int = 2000,
    n_videos: int = 0,
    classes: int | Sequence[str] | None = None,
    seed: int = 0,
    shard_size: int = 500,
    config: SynthConfig | None = None,
) -> dict:
    """Write ``n_images`` images and ``n_videos`` videos as webdataset shards in ``out_dir``.

    Each sample has its media (``jpg``/``png``/``mp4``), ``cls`` (class id), ``json`` (kind,
    class, size) and ``txt`` (a caption, see :func:`caption`).

    Args:
        out_dir: folder for ``shard-000000.tar`` ... (created).
        n_images, n_videos: how many of each; classes are balanced (round robin)
            and samples shuffled so every shard mixes classes and kinds.
        classes: image classes to use: a count (the first ``n`` of
            :data:`IMAGE_CLASSES`), a list of names, or ``None`` for all.
        seed: makes the dataset reproducible.
        shard_size: samples per shard.

    Returns:
        ``{"urls": [shard paths], "counts": {"images", "videos", "per_class"},
        "class_names": [...], "num_classes": n}``; ids index ``class_names``.
    """
    cfg = config or SynthConfig()
    image_classes = _image_classes(classes)
    if n_images < 0 or n_videos < 0 or shard_size < 1:
        raise ValueError("n_images and n_videos must be >= 0 and shard_size >= 1")
    class_names = image_classes + (list(VIDEO_CLASSES) if n_videos else [])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    items = [("image", i, image_classes[i % len(image_classes)]) for i in range(n_images)]
    items += [("video", i, VIDEO_CLASSES[i % len(VIDEO_CLASSES)]) for i in range(n_videos)]
    order = np.random.default_rng([seed, 2**31 - 1]).permutation(len(items))
    per_class = {name: 0 for name in class_names}
    pattern = str(out / "shard-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0) as sink:
        for j in order:
            kind, i, name = items[j]
            per_class[name] += 1
            sink.write(_sample(kind, i, name, class_names.index(name), seed, cfg))
    urls = sorted(str(p) for p in out.glob("shard-*.tar"))
    return {
        "urls": urls,
        "counts": {"images": n_images, "videos": n_videos, "per_class": per_class},
        "class_names": class_names,
        "num_classes": len(class_names),
    }
