import pytest

from medclass.utils import flag


@pytest.mark.parametrize("value,expected", [(True, True), (False, False), (None, False), (1, True), (0, False),
                                            ("false", False), ("False", False), ("true", True), ("no", False),
                                            ("1", True), ("null", False)])
def test_flag(value, expected):
    assert flag(value) is expected


@pytest.mark.parametrize("value", ["maybe", 2, [True]])
def test_flag_rejects(value):
    with pytest.raises(ValueError, match="resume must be true or false"):
        flag(value, "resume")


@pytest.mark.parametrize("value,expected", [(None, None), ("None", None), ("null", None), ("", None),
                                            ("i3d", "i3d"), (0, 0)])
def test_optional(value, expected):
    from medclass.utils import optional

    assert optional(value) == expected
