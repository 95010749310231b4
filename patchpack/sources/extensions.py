"""Which member and file extensions are media: images and videos (lower case, no dot).

The source layer decides from a name alone which files of a plain folder are examples
(:mod:`patchpack.sources.folderscan`); the decoders pick a sample's media member with the same
sets. ``gif`` is both: an image, or a video when video decoding is on.
"""

from __future__ import annotations

__all__ = ["IMAGE_EXTS", "VIDEO_EXTS", "MEDIA_EXTS"]

#: Extensions of images (Pillow decodes them).
IMAGE_EXTS = frozenset(
    {"jpg", "jpeg", "jpe", "jfif", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm", "pbm", "pnm",
     "tga", "ico", "jp2", "j2k", "jpx"}
)

#: Extensions of videos (PyAV decodes them when the loader has a ``VideoConfig``).
VIDEO_EXTS = frozenset(
    {"mp4", "m4v", "mov", "webm", "mkv", "avi", "gif", "mpg", "mpeg", "ts", "m2ts", "flv", "ogv", "3gp", "wmv", "y4m"}
)

#: Every media extension: a file of a plain folder with one of these is an example.
MEDIA_EXTS = IMAGE_EXTS | VIDEO_EXTS
