import pytest

from sslab.core.registry import ENCODERS, Registry, RegistryError


def test_register_build_and_list():
    reg = Registry("widget")

    @reg.register("a")
    def make_a(x=1):
        return ("a", x)

    assert reg.build("a", x=3) == ("a", 3)
    assert "a" in reg and reg.names() == ["a"]


def test_duplicate_name_raises():
    reg = Registry("widget")
    reg.register("a")(object)
    with pytest.raises(RegistryError, match="'a' is already registered"):
        reg.register("a")(object)


def test_unknown_name_lists_known_ones():
    reg = Registry("widget")
    reg.register("alpha")(object)
    reg.register("beta")(object)
    with pytest.raises(RegistryError) as err:
        reg.get("gamma")
    assert "unknown widget 'gamma'" in str(err.value)
    assert "alpha, beta" in str(err.value)


def test_bad_keyword_names_builder():
    with pytest.raises(TypeError, match="encoder 'mlp'.*unexpected keyword argument 'widht'"):
        ENCODERS.build("mlp", in_dim=4, widht=3)


def test_plugins_are_discovered():
    assert "mlp" in ENCODERS  # membership triggers plugin discovery too
    assert "mlp" in ENCODERS.names()
