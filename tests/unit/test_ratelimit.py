"""The login limiter: failures per key in a sliding window, on an injected clock."""

from __future__ import annotations

import pytest

from services.api.auth.ratelimit import FailureLimiter, LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_blocked_after_max_failures_until_the_oldest_leaves_the_window() -> None:
    clock = Clock()
    limiter = FailureLimiter(3, 60, clock=clock)
    for _ in range(2):
        limiter.record_failure("a")
        clock.now += 10
    assert limiter.retry_after("a") is None
    limiter.record_failure("a")  # failures at 1000, 1010, 1020
    assert limiter.retry_after("a") == pytest.approx(40)  # 1000 + 60 - 1020
    clock.now = 1059.5
    assert limiter.retry_after("a") == pytest.approx(0.5)
    clock.now = 1060  # the first failure has left the window
    assert limiter.retry_after("a") is None
    limiter.record_failure("a")  # 1010, 1020, 1060
    assert limiter.retry_after("a") == pytest.approx(10)


def test_keys_are_independent_and_reset_clears_one() -> None:
    clock = Clock()
    limiter = FailureLimiter(2, 30, clock=clock)
    for key in ("a", "a", "b"):
        limiter.record_failure(key)
    assert limiter.retry_after("a") == pytest.approx(30)
    assert limiter.retry_after("b") is None
    limiter.reset("a")
    assert limiter.retry_after("a") is None
    limiter.reset("never-seen")


def test_stale_keys_are_forgotten() -> None:
    clock = Clock()
    limiter = FailureLimiter(5, 30, clock=clock)
    limiter.record_failure("a")
    clock.now += 31
    assert limiter.retry_after("a") is None
    assert len(limiter) == 0


@pytest.mark.parametrize(("stale", "kept"), [(True, {"c", "d"}), (False, {"b", "c"})])
def test_memory_is_bounded(stale: bool, kept: set[str]) -> None:
    clock = Clock()
    limiter = FailureLimiter(1, 30, clock=clock, max_keys=2)
    limiter.record_failure("a")
    limiter.record_failure("b")
    clock.now += 31 if stale else 1
    limiter.record_failure("c")
    if stale:  # both old keys were stale: both went
        limiter.record_failure("d")
    assert len(limiter) == 2
    assert {k for k in "abcd" if limiter.retry_after(k) is not None} == kept


@pytest.mark.parametrize(
    ("max_failures", "window_s", "max_keys"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)]
)
def test_nonsense_limits_are_refused(max_failures: int, window_s: float, max_keys: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        FailureLimiter(max_failures, window_s, max_keys=max_keys)


def test_throttle_blocks_on_either_limit_in_whole_seconds() -> None:
    clock = Clock()
    throttle = LoginThrottle.create(2, 60, clock)
    throttle.failed("10.0.0.1", "alice@example.com")
    throttle.failed("10.0.0.2", "alice@example.com")
    # the account is at its limit, from whatever address
    assert throttle.retry_after_s("10.0.0.3", "alice@example.com") == 60
    assert throttle.retry_after_s("10.0.0.1", "bob@example.com") is None
    clock.now += 59.2
    assert throttle.retry_after_s("10.0.0.3", "alice@example.com") == 1  # rounded up
    clock.now += 0.8
    assert throttle.retry_after_s("10.0.0.3", "alice@example.com") is None

    throttle.failed("10.0.0.9", "a@example.com")
    throttle.failed("10.0.0.9", "b@example.com")
    # the address is at its limit, for whatever account
    assert throttle.retry_after_s("10.0.0.9", "c@example.com") == 60


def test_a_correct_password_clears_the_account_but_not_the_address() -> None:
    throttle = LoginThrottle.create(2, 60, Clock())
    throttle.failed("10.0.0.1", "alice@example.com")
    throttle.failed("10.0.0.1", "alice@example.com")
    throttle.succeeded("alice@example.com")
    assert throttle.retry_after_s("10.0.0.2", "alice@example.com") is None
    assert throttle.retry_after_s("10.0.0.1", "bob@example.com") == 60
