"""The rolling-window limiter, in virtual time (injected clock and sleep) and with real threads."""

from __future__ import annotations

import random
import threading
import time

import pytest

from airflow_provider_retl.hooks.ratelimit import RollingWindowLimiter, shared_limiter


class VirtualTime:
    """A clock and a sleep that advances it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = start = 0
    for end, moment in enumerate(times):
        while times[start] <= moment - window:
            start += 1
        best = max(best, end - start + 1)
    return best


class TestRollingWindowLimiter:
    def test_first_n_requests_go_at_once_then_waits_for_the_window(self):
        vt = VirtualTime()
        limiter = RollingWindowLimiter(3, 10.0, clock=vt.clock, sleep=vt.sleep)
        for _ in range(3):
            with limiter:
                pass
        assert vt.sleeps == []
        assert limiter.acquire() == pytest.approx(10.0)
        assert vt.sleeps == [pytest.approx(10.0)]

    def test_a_slot_frees_window_seconds_after_its_request_finished(self):
        vt = VirtualTime()
        limiter = RollingWindowLimiter(1, 10.0, clock=vt.clock, sleep=vt.sleep)
        limiter.acquire()
        vt.now = 2.0  # the request took 2 s: the server saw it somewhere in [0, 2]
        limiter.release()
        limiter.acquire()
        assert vt.now == pytest.approx(12.0)

    def test_never_more_than_n_in_any_window(self):
        vt = VirtualTime()
        limiter = RollingWindowLimiter(5, 1.0, clock=vt.clock, sleep=vt.sleep)
        rng = random.Random(7)
        sent: list[float] = []
        for _ in range(200):
            vt.now += rng.choice([0.0, 0.0, 0.01, 0.05, 0.3])
            limiter.acquire()
            sent.append(vt.now)
            vt.now += rng.uniform(0, 0.02)  # latency
            limiter.release()
        assert max_in_any_window(sent, 1.0) == 5
        assert vt.now >= (200 / 5 - 1) * 1.0  # and it did not over-throttle wildly either
        assert vt.now < 200 / 5 * 1.2

    def test_pause_holds_everyone_back(self):
        vt = VirtualTime()
        limiter = RollingWindowLimiter(100, 10.0, clock=vt.clock, sleep=vt.sleep)
        limiter.pause(5.0)
        limiter.acquire()
        assert vt.now == pytest.approx(5.0)

    def test_all_slots_in_flight_polls_until_one_finishes(self):
        vt = VirtualTime()
        limiter = RollingWindowLimiter(1, 1.0, clock=vt.clock, sleep=vt.sleep)
        limiter.acquire()

        def finish_soon(seconds: float) -> None:
            vt.sleep(seconds)
            if vt.now >= 0.05 and limiter.in_use and not finished:
                finished.append(True)
                limiter.release()

        finished: list[bool] = []
        limiter._sleep = finish_soon
        limiter.acquire()
        assert vt.now == pytest.approx(1.05, abs=0.02)

    def test_rejects_nonsense_configuration(self):
        with pytest.raises(ValueError, match="at least 1"):
            RollingWindowLimiter(0, 1.0)
        with pytest.raises(ValueError, match="positive"):
            RollingWindowLimiter(1, 0)

    def test_threads_share_the_budget(self):
        limiter = RollingWindowLimiter(4, 0.2)
        sent: list[float] = []
        lock = threading.Lock()

        def worker() -> None:
            for _ in range(3):
                with limiter:
                    with lock:
                        sent.append(time.monotonic())

        threads = [threading.Thread(target=worker) for _ in range(4)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(sent) == 12
        assert max_in_any_window(sent, 0.2) <= 4
        assert time.monotonic() - started >= 0.4  # 12 requests, 4 per 0.2 s


class TestSharedLimiter:
    def test_same_account_same_limiter(self):
        assert shared_limiter("a", 10, 1.0) is shared_limiter("a", 10, 1.0)
        assert shared_limiter("a", 10, 1.0) is not shared_limiter("b", 10, 1.0)

    def test_the_stricter_configuration_wins(self):
        limiter = shared_limiter("acct", 100, 10.0)
        shared_limiter("acct", 50, 10.0)
        assert (limiter.limit, limiter.window) == (50, 10.0)
        shared_limiter("acct", 190, 10.0)
        assert limiter.limit == 50
