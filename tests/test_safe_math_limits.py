"""Issue 26, adversarial item 1: the evaluator's limits hold for constants too, and scoring hostile text is fast."""

import time

import pytest

from stepdistill.safe_math import MAX_MAGNITUDE, UnsafeExpression, safe_eval, try_eval
from stepdistill.tasks.answers import Equation


@pytest.mark.parametrize("text", ["1" * 310, "1" * 400 + " + 1", "-" + "9" * 320, "1e999", "-1e999", "1e200",
                                  "1e200 * 0", "(1e101)", "2 * 1e150 / 1e150"],
                         ids=lambda t: t[:12] + (f"...({len(t)})" if len(t) > 12 else ""))
def test_constants_past_the_cap_are_unsafe_not_a_crash(text):
    with pytest.raises(UnsafeExpression):
        safe_eval(text)
    assert try_eval(text) is None


def test_the_cap_itself_still_evaluates():
    assert safe_eval("1e100") == MAX_MAGNITUDE
    assert safe_eval("12345678901234567890") == pytest.approx(1.2345678901234567e19)


@pytest.mark.parametrize("label", ["1" * 310, "1e999", "(12 - 2) - 7"], ids=["310-digits", "1e999", "plain"])
def test_equation_answers_never_raise(label):
    eq = Equation()
    value = eq.normalize(label, {})  # a gold label, a teacher answer or a generation: None, never a crash
    assert (value == "(12 - 2) - 7") is (label == "(12 - 2) - 7")
    assert eq.correct(label, "(12 - 2) - 7", {}) is (label == "(12 - 2) - 7")
    assert eq.correct("(12 - 2) - 7", label, {}) is (label == "(12 - 2) - 7")


@pytest.mark.parametrize("hostile", ["1+a" * 350_000, "(1" * 500_000, "1 " * 500_000, "9" * 1_000_000],
                         ids=["1+a", "(1", "1-space", "nines"])
def test_normalize_on_a_megabyte_of_hostile_text_is_fast(hostile):
    t0 = time.perf_counter()
    assert Equation().normalize(hostile, {}) is None
    assert time.perf_counter() - t0 < 0.5


def test_an_equation_after_a_long_rationale_is_still_found():
    text = "word " * 300 + "so the answer is (84 / 2)"
    assert Equation().normalize(text, {}) == "(84 / 2)"
