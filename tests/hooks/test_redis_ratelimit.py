"""The Redis-backed rolling window: one API budget shared by threads, limiter objects and processes.

Needs the Redis server on 127.0.0.1:6379 (``RETL_TEST_REDIS_URL`` overrides): skipped
without one locally, failed when ``CI`` is set.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import uuid

import pytest

from airflow_provider_retl.hooks.ratelimit import RedisRollingWindowLimiter, shared_limiter
from airflow_provider_retl.testing.emulators import start_emulator

from .test_hook_ratelimit import max_in_any_window

REDIS_URL = os.environ.get("RETL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TOKEN = "pat-redis-limit-token"


def _redis_error() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # any failure means "no usable server"
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="module")
def redis_url() -> str:
    error = _redis_error()
    if error is not None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"Redis at {REDIS_URL} does not answer and CI is set: {error}", pytrace=False)
        pytest.skip(f"no Redis at {REDIS_URL} ({error})")
    return REDIS_URL


@pytest.fixture
def account() -> str:
    return f"https://api.test#token:{uuid.uuid4().hex}"  # a fresh window per test


def limiter(url: str, account: str, limit: int, window: float, **kw) -> RedisRollingWindowLimiter:
    made = RedisRollingWindowLimiter(account, limit, window, url=url, **kw)
    return made


class TestRedisRollingWindowLimiter:
    def test_two_limiters_of_one_account_share_the_window(self, redis_url, account):
        # Two objects stand for two processes: each alone would allow 5, together they allow 5.
        a, b = limiter(redis_url, account, 5, 0.5), limiter(redis_url, account, 5, 0.5)
        sent: list[float] = []
        lock = threading.Lock()

        def worker(lim: RedisRollingWindowLimiter) -> None:
            for _ in range(5):
                with lim:
                    with lock:
                        sent.append(time.monotonic())

        threads = [threading.Thread(target=worker, args=(lim,)) for lim in (a, b, a, b)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(sent) == 20
        assert max_in_any_window(sent, 0.5) <= 5
        assert time.monotonic() - started >= 3 * 0.5  # 20 requests need at least 4 windows
        assert a.waited + b.waited > 0 and a.in_use <= 5
        a.reset()

    def test_other_accounts_have_their_own_window(self, redis_url, account):
        a = limiter(redis_url, account, 1, 5.0)
        other = limiter(redis_url, account + "-other", 1, 5.0)
        with a:
            pass
        started = time.monotonic()
        with other:
            pass
        assert time.monotonic() - started < 0.5 and a.in_use == 1 and other.in_use == 1
        a.reset()
        other.reset()

    def test_a_slot_frees_window_seconds_after_release_and_pause_holds_everyone(self, redis_url, account):
        a, b = limiter(redis_url, account, 1, 0.4), limiter(redis_url, account, 1, 0.4)
        a.acquire()
        time.sleep(0.3)  # a slow request: the slot counts until 0.4 s after it finished
        a.release()
        released = time.monotonic()
        b.acquire()
        assert time.monotonic() - released >= 0.35
        b.release()
        time.sleep(0.45)
        b.pause(0.5)  # e.g. a 429 with Retry-After seen by one process
        paused = time.monotonic()
        a.acquire()
        assert time.monotonic() - paused >= 0.45
        a.release()
        a.reset()

    def test_a_slot_whose_release_never_comes_expires_with_its_lease(self, redis_url, account):
        dead = limiter(redis_url, account, 1, 0.2, lease=0.5)
        dead.acquire()  # the process "dies" mid-request: no release
        alive = limiter(redis_url, account, 1, 0.2)
        started = time.monotonic()
        alive.acquire()
        assert 0.4 <= time.monotonic() - started < 3.0
        alive.release()
        alive.reset()

    def test_shared_limiter_gives_one_redis_limiter_per_account_and_url(self, redis_url, account):
        first = shared_limiter(account, 10, 1.0, redis_url=redis_url)
        assert isinstance(first, RedisRollingWindowLimiter)
        assert shared_limiter(account, 5, 2.0, redis_url=redis_url) is first
        assert (first.limit, first.window) == (5, 2.0)  # the stricter configuration wins
        assert not isinstance(shared_limiter(account, 10, 1.0), RedisRollingWindowLimiter)

    def test_unreachable_redis_falls_back_to_the_process_window(self, account, caplog):
        lim = RedisRollingWindowLimiter(account, 2, 0.3, url="redis://127.0.0.1:1/0")
        caplog.set_level(logging.WARNING, logger="airflow_provider_retl.hooks.ratelimit")
        started = time.monotonic()
        for _ in range(3):
            with lim:
                pass
        assert time.monotonic() - started >= 0.25  # the third waited for the in-process window
        assert sum("Redis rate limiter unreachable" in r.message for r in caplog.records) == 1


# Several task processes (like Airflow's task runners) against one rate-limited API.

PROCESSES = 4
REQUESTS_PER_PROCESS = 8
API_LIMIT, API_WINDOW = 6, 1.0


def _send_requests(conn_id: str, conn_json: str, barrier, results) -> None:
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = conn_json
    from airflow_provider_retl.hooks.hubspot import HubSpotHook
    from airflow_provider_retl.sync.errors import RetryableDestinationError

    hook = HubSpotHook(conn_id)
    hook.get_conn()
    barrier.wait(timeout=120)  # every process is ready: start together
    ok = throttled = 0
    for _ in range(REQUESTS_PER_PROCESS):
        try:
            hook.request("GET", "/crm/v3/objects/contacts", params={"limit": 1})
            ok += 1
        except RetryableDestinationError as exc:
            assert exc.status == 429, exc
            throttled += 1
    results.put((ok, throttled))


def _run_processes(hubspot, extra: dict) -> tuple[int, int]:
    import json

    conn_id = f"hubspot_limit_{uuid.uuid4().hex[:8]}"
    conn_json = json.dumps(
        {"conn_type": "retl_hubspot", "host": hubspot.url, "password": TOKEN, "extra": {"max_retries": 0, **extra}}
    )
    # Fresh single-threaded processes (not forks of this one, which runs the emulator's threads);
    # the fork server imports Airflow and the hook once, so each process starts in milliseconds.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["airflow_provider_retl.hooks.hubspot"])
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_send_requests, args=(conn_id, conn_json, barrier, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=180) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return sum(o for o, _ in outcomes), sum(t for _, t in outcomes)


@pytest.fixture
def hubspot():
    with start_emulator("hubspot", tokens=[TOKEN], rate_limit=API_LIMIT, rate_window=API_WINDOW) as running:
        yield running


def test_processes_sharing_the_redis_window_never_hit_the_api_limit(hubspot, redis_url):
    extra = {"rate_limit": API_LIMIT, "rate_window": API_WINDOW}
    # Each process keeps its own window: together they overrun the API (so the test below can fail).
    ok, throttled = _run_processes(hubspot, extra)
    refused = sum(not e.allowed for e in hubspot.emulator.limiter.events)
    assert throttled > 0 and refused == throttled and ok + throttled == PROCESSES * REQUESTS_PER_PROCESS

    hubspot.emulator.limiter.reset()
    ok, throttled = _run_processes(hubspot, {**extra, "rate_limit_redis_url": redis_url})
    events = hubspot.emulator.limiter.events
    assert throttled == 0 and not any(not e.allowed for e in events)
    assert ok == PROCESSES * REQUESTS_PER_PROCESS == len(events)
    assert hubspot.emulator.limiter.max_in_window() <= API_LIMIT


def test_a_connection_extra_gives_its_hook_the_redis_window_and_masks_its_password(add_connection, monkeypatch):
    from airflow_provider_retl.hooks import destination as destination_module
    from airflow_provider_retl.hooks.hubspot import HubSpotHook

    masked: list[str] = []
    monkeypatch.setattr(destination_module, "mask_secret", lambda secret, name=None: masked.append(secret))
    url = "redis://:redis-pw-4711@127.0.0.1:6379/0"  # the client connects lazily: no server needed here
    add_connection("hs_redis", "retl_hubspot", "http://127.0.0.1:9", rate_limit=7, rate_window=2,
                   rate_limit_redis_url=url)
    add_connection("hs_plain", "retl_hubspot", "http://127.0.0.1:9", rate_limit=7, rate_window=2)
    limiter = HubSpotHook("hs_redis").limiter
    assert isinstance(limiter, RedisRollingWindowLimiter) and (limiter.limit, limiter.window) == (7, 2.0)
    assert "redis-pw-4711" in masked
    assert not isinstance(HubSpotHook("hs_plain").limiter, RedisRollingWindowLimiter)
