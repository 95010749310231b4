"""Loader config files: a :class:`~patchpack.config.LoaderConfig` read from and written to TOML or YAML.

A file holds the loader's own option names, as ``make_loader`` takes them: nested tables
(``[pack]`` then ``seq_len = 512``), ``section__field`` keys (``pack__seq_len = 512``) or a
section's field by its bare name where only one section has it (``seq_len = 512``).
``video`` and ``augment`` are tables too (giving one switches that part on); ``"none"`` (or
YAML's ``null``) unsets an option whose default may be unset (``max_per_seq = "none"``).
Options not in the file keep their defaults. :func:`dump_config` writes every option, so
the file a run printed (``patchpack config``) reproduces it::

    cfg = load_config_file("run.toml")            # -> LoaderConfig
    loader = make_loader(urls, cfg, num_workers=4)

TOML is read with :mod:`tomllib` (standard library); YAML needs ``pyyaml``
(``pip install 'patchpack[yaml]'``). A mistake in a file (an unknown option, a value of the
wrong type, invalid syntax) is one :class:`ConfigFileError` line naming the file and the
option, with the closest option names for an unknown one.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import fields, is_dataclass
from typing import Any

from .config import LoaderConfig

__all__ = ["ConfigFileError", "load_config_file", "config_overrides", "apply_overrides", "config_dict",
           "dump_config", "FORMATS"]

FORMATS = ("toml", "yaml")
_SECTIONS = ("fit", "drop", "pack", "image", "video", "augment")
_SWITCHED = ("video", "augment")  # sections that are None (off) by default


class ConfigFileError(ValueError):
    """A config file that cannot be used: one line naming the file and the option."""


def _section_class(name: str) -> type:
    if name == "video":
        from .decode.video.config import VideoConfig

        return VideoConfig
    if name == "augment":
        from .augment import AugmentConfig

        return AugmentConfig
    return type(getattr(LoaderConfig(), name))


def _fields(cls: type) -> dict[str, Any]:
    return {f.name: f for f in fields(cls)}


_TOP = _fields(LoaderConfig)


def _known_names() -> list[str]:
    names = [n for n in _TOP if n not in _SECTIONS]
    for s in _SECTIONS:
        names += [f"{s}.{n}" for n in _fields(_section_class(s))]
    return names


def _unknown(path: str, name: str) -> ConfigFileError:
    close = difflib.get_close_matches(name.replace("__", "."), _known_names(), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigFileError(f"{path}: unknown option {name!r}{hint}")


def _kind(annotation: Any) -> tuple[str, bool]:
    """``(base type name, may be None)`` of a dataclass field annotation (a string here)."""
    parts = [p.strip() for p in str(annotation).split("|")]
    optional = "None" in parts
    base = next((p for p in parts if p != "None"), "Any")
    return base.split("[")[0], optional


def _convert(path: str, name: str, field: Any, value: Any) -> Any:
    """``value`` as field ``name`` takes it, or a :class:`ConfigFileError` saying what it must be."""
    base, optional = _kind(field.type)
    if value is None or (isinstance(value, str) and value.strip().lower() == "none" and base != "str"
                         ) or (optional and value == "none"):
        if optional or base == "Any":
            return None
        raise ConfigFileError(f"{path}: {name} cannot be none")
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "tuple": isinstance(value, (list, tuple)),
    }
    if base in ok and not ok[base]:
        what = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
                "tuple": "a list"}[base]
        raise ConfigFileError(f"{path}: {name} must be {what}" + (" or \"none\"" if optional else "")
                              + f", got {value!r}")
    if base == "float":
        return float(value)
    if base == "tuple":
        return tuple(value)
    if base not in ok and base != "Any":  # a function or a Python object: set it in code
        raise ConfigFileError(f"{path}: {name} is a Python object ({base}); set it in code, not in a file")
    return value


def _section(path: str, name: str, table: Any) -> Any:
    """A switched section (video, augment) from its table (or ``"none"`` / ``true``)."""
    if table is None or table == "none":
        return None
    cls = _section_class(name)
    if table is True:
        return cls()
    if not isinstance(table, dict):
        raise ConfigFileError(f"{path}: {name} must be a table of options or \"none\", got {table!r}")
    own = _fields(cls)
    kw = {}
    for k, v in table.items():
        if k not in own:
            raise _unknown(path, f"{name}.{k}")
        kw[k] = _convert(path, f"{name}.{k}", own[k], v)
    try:
        return cls(**kw)
    except (TypeError, ValueError) as exc:
        raise ConfigFileError(f"{path}: {name}: {exc}") from None


def _resolve(path: str, name: str) -> tuple[str | None, str]:
    """``(section or None, field)`` of a key (``seq_len``, ``pack__seq_len``, ``batch_size``)."""
    if name in _TOP and name not in _SECTIONS:
        return None, name
    sec, sep, sub = name.partition("__")
    if sep:
        if sec in _SECTIONS and sub in _fields(_section_class(sec)):
            return sec, sub
        raise _unknown(path, name)
    owners = [s for s in _SECTIONS if s not in _SWITCHED and name in _fields(_section_class(s))]
    if len(owners) == 1:
        return owners[0], name
    if owners:
        raise ConfigFileError(f"{path}: option {name!r} is in " + " and ".join(owners) + ": write "
                              + " or ".join(f"[{s}] {name}" for s in owners))
    raise _unknown(path, name)


def _flatten(path: str, data: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        if key in _SWITCHED:
            out[key] = _section(path, key, value)
        elif key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigFileError(f"{path}: {key} must be a table of options, got {value!r}")
            own = _fields(_section_class(key))
            for k, v in value.items():
                if k not in own:
                    raise _unknown(path, f"{key}.{k}")
                out[f"{key}__{k}"] = _convert(path, f"{key}.{k}", own[k], v)
        else:
            sec, name = _resolve(path, key)
            field = _TOP[name] if sec is None else _fields(_section_class(sec))[name]
            out[name if sec is None else f"{sec}__{name}"] = _convert(path, key, field, value)
    return out


def _read(path: str) -> dict:
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".toml", ".yaml", ".yml"):
        raise ConfigFileError(f"{path}: a config file is .toml, .yaml or .yml")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigFileError(f"{path}: {exc.strerror or exc}") from None
    if ext == ".toml":
        import tomllib

        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None
    else:
        try:
            import yaml
        except ImportError:
            raise ConfigFileError(f"{path}: YAML config files need pyyaml: pip install 'patchpack[yaml]'") from None
        try:
            data = yaml.safe_load(raw) or {}
        except yaml.YAMLError as exc:
            raise ConfigFileError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a table of options, got {type(data).__name__}")
    return data


def config_overrides(path: str | os.PathLike) -> dict[str, Any]:
    """The loader options a config file sets, as ``make_loader`` / ``with_overrides`` keywords, each
    spelled one way: ``section__field`` (``pack__seq_len``, also for ``seq_len = ...``) or a
    top-level option (``batch_size``); ``video`` and ``augment`` as whole configs or ``None``.

    Raises:
        ConfigFileError: one line naming the file and the option.
    """
    path = os.fspath(path)
    return _flatten(path, _read(path))


def apply_overrides(base: LoaderConfig, overrides: dict[str, Any]) -> LoaderConfig:
    """``base`` with ``overrides`` (``with_overrides`` keys); a ``video__*`` or ``augment__*`` key
    switches that section on (with its defaults) when ``base`` has it off."""
    overrides = dict(overrides)
    for sec in _SWITCHED:
        keys = {k.partition("__")[2]: v for k, v in overrides.items() if k.startswith(f"{sec}__")}
        if keys and overrides.get(sec, getattr(base, sec)) is None:
            overrides = {k: v for k, v in overrides.items() if not k.startswith(f"{sec}__")}
            overrides[sec] = _section_class(sec)(**keys)
    return base.with_overrides(**overrides)


def load_config_file(path: str | os.PathLike, base: LoaderConfig | None = None) -> LoaderConfig:
    """The :class:`~patchpack.config.LoaderConfig` a config file describes (options it does not
    name keep ``base``'s values, by default the defaults).

    Raises:
        ConfigFileError: a mistake in the file, one line; ``ValueError``: values the config refuses.
    """
    return apply_overrides(base or LoaderConfig(), config_overrides(path))


def _plain(value: Any, name: str) -> Any:
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name), f"{name}.{f.name}") for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v, name) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"{name} is a Python object ({type(value).__name__}) and cannot be written to a config "
                     "file; set it in code")


def config_dict(cfg: LoaderConfig) -> dict[str, Any]:
    """Every option of ``cfg`` as plain values: options first, then one dict per section.

    Raises:
        ValueError: an option holds a Python object (a tokenizer, a custom drop-rate function).
    """
    out = {f.name: _plain(getattr(cfg, f.name), f.name) for f in fields(cfg) if f.name not in _SECTIONS}
    out.update({s: _plain(getattr(cfg, s), s) for s in _SECTIONS})
    return out


def _toml_value(v: Any) -> str:
    if v is None:
        return '"none"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


def _toml(data: dict[str, Any]) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def dump_config(cfg: LoaderConfig, fmt: str = "toml") -> str:
    """``cfg`` as a config file's text (every option, defaults included); ``fmt`` ``"toml"`` or ``"yaml"``.
    Unset options are ``"none"`` in TOML, ``null`` in YAML; :func:`load_config_file` reads either back
    to an equal config."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown config format {fmt!r}; expected one of {FORMATS}")
    data = config_dict(cfg)
    head = "# patchpack loader config: every option, defaults included (patchpack config --help)\n"
    if fmt == "toml":
        return head + _toml(data)
    import yaml

    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
