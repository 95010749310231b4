"""The one registry shape: decorator and call forms, duplicate refusal, listing, unknown-name hints."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from patchpack.registry import Registry, RegistryError


def test_decorator_and_call_register_the_same_way():
    reg: Registry = Registry("widget", hint="register_widget")

    @reg.register("b")
    class B:
        pass

    assert reg.register("a", len) is len
    assert reg.get("b") is B and reg.get("a") is len
    assert reg.names() == ["a", "b"] and reg.names(ordered=True) == ["b", "a"]
    assert "a" in reg and len(reg) == 2 and list(reg) == ["a", "b"]


def test_duplicate_needs_override():
    reg: Registry = Registry("widget")
    reg.register("x", 1)
    reg.register("x", 1)  # the same entry again is harmless (module reloads)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("x", 2)
    reg.register("x", 2, override=True)
    assert reg.get("x") == 2


def test_unknown_name_is_one_line_with_close_names_and_hint():
    reg: Registry = Registry("packer", hint="patchpack.register_packer")
    for name in ("bfd", "first-fit", "next-fit"):
        reg.register(name, name)
    with pytest.raises(RegistryError) as info:
        reg.get("frist-fit")
    msg = str(info.value)
    assert "\n" not in msg and "did you mean 'first-fit'" in msg and "patchpack.register_packer" in msg
    assert "bfd, first-fit, next-fit" in msg


def test_find_asks_newest_first():
    reg: Registry = Registry("source")
    reg.register("any", lambda u: True)
    reg.register("tar", lambda u: u.endswith(".tar"))
    assert reg.find(lambda m: m("x.tar"))[0] == "tar"
    assert reg.find(lambda m: m("x.zip"))[0] == "any"
    assert reg.find(lambda m: False) is None


def test_bad_names_are_refused():
    reg: Registry = Registry("model")
    with pytest.raises(TypeError):
        reg.register("", 1)
    with pytest.raises(RegistryError):
        reg.unregister("missing")


@given(st.lists(st.text(min_size=1, max_size=8), unique=True, max_size=12))
def test_names_are_what_was_registered(names):
    reg: Registry = Registry("thing")
    for n in names:
        reg.register(n, n)
    assert reg.names(ordered=True) == names and reg.names() == sorted(names)
    assert all(reg.get(n) == n for n in names)
