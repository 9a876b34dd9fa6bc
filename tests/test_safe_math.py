import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepdistill.safe_math import UnsafeExpression, safe_eval, same_value, try_eval

HOSTILE = [
    "__import__('os').system('x')",
    "9**9**9**9",
    "().__class__",
    "().__class__.__bases__[0].__subclasses__()",
    "open('/etc/passwd').read()",
    "lambda: 1",
    "[1, 2, 3]",
    "x + 1",
    "1 if True else 2",
    "'a' * 10",
    "10**1000",
    "2 ** 10 ** 10",
    "(" * 5000 + "1" + ")" * 5000,
    "1" * 10_000,
    "",
    "   ",
    "1 +",
    "1; 2",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_are_rejected(text):
    with pytest.raises(UnsafeExpression):
        safe_eval(text)
    assert try_eval(text) is None


@pytest.mark.parametrize("text,value", [
    ("( 84.0 / 2.0 )", 42.0), ("(10 - (3 + 6))", 1.0), ("10 * 45", 450.0), ("-3 + 5", 2.0),
    ("2 ** 10", 1024.0), ("7 % 4", 3.0), ("9 // 2", 4.0), ("1,000 + 2", 1002.0), ("3 × 4", 12.0),
    ("42", 42.0), ("0.5 * 4", 2.0),
])
def test_plain_arithmetic(text, value):
    assert safe_eval(text) == pytest.approx(value)


def test_division_by_zero_is_unsafe_not_a_crash():
    assert try_eval("1 / 0") is None


@given(st.integers(-10**6, 10**6), st.integers(-10**6, 10**6))
def test_matches_python_on_sums_and_products(a, b):
    assert safe_eval(f"({a}) + ({b})") == a + b
    assert safe_eval(f"({a}) * ({b})") == a * b


@given(st.text(max_size=60))
def test_never_raises_anything_but_unsafe(text):
    try:
        safe_eval(text)
    except UnsafeExpression:
        pass


def test_same_value_tolerance_and_none():
    assert same_value(0.1 + 0.2, 0.3)
    assert not same_value(None, 1.0)
    assert not same_value(1.0, 1.1)
