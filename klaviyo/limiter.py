"""Shared rate limiter in Redis: Klaviyo's burst and steady windows per (account, rate class), checked
atomically in one Lua script, a shared pause set by any 429, and fair turns between concurrent runs.

Klaviyo counts in fixed windows whose alignment we cannot see. We keep a log of grant times and allow
at most N grants in ANY interval of the window's length: that never exceeds a fixed window of that
length, whatever its alignment, and sustains the same rate. Burst is held to half by default so the
jitter between our grant and Klaviyo's arrival time cannot put two of our bursts into one of its windows.
A pace window (two grants per their share of the steady window, with 10% headroom) spreads grants over
the window instead of spending it in one rush: a server that queues a rush counts its tail late, in
its next window, and answers 429. Steady is held to 97%: the rest absorbs that same jitter.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from klaviyo.endpoints import RateClass

# Returns 0 when a request may go now, else how many ms to wait before asking again.
# Windows: ':log' is a sorted set of grant times (ms, Redis clock) trimmed to the steady window.
# Fairness (start-time fair queueing): every waiting call holds a ticket ("run|ticket", score = expiry)
# while it waits. Each run has a virtual time that grows by 1/weight per grant, never starting behind the
# virtual clock (the start of the last grant), so a run that was idle or joins late gets no back credit.
# A call is deferred while another run with a live ticket is behind it: when several runs wait, grants
# alternate (weighted) instead of going to whichever run has the most tasks asking.
_ACQUIRE = """
local base = KEYS[1]
local steady_limit = tonumber(ARGV[1])
local steady_ms = tonumber(ARGV[2])
local run = ARGV[3]
local member = run .. '|' .. ARGV[4]
local weight = tonumber(ARGV[5])
local fair_wait = tonumber(ARGV[6])
local grace = tonumber(ARGV[7])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tickets = base .. ':tickets'
local vts = base .. ':vt'

local function wait(ms)
  if ms < 1 then ms = 1 end
  redis.call('ZADD', tickets, now + ms + grace, member)
  redis.call('PEXPIRE', tickets, math.ceil(ms + grace) + 60000)
  return math.ceil(ms)
end

local paused = tonumber(redis.call('GET', base .. ':paused') or '0')
if paused > now then return wait(paused - now) end

redis.call('ZREMRANGEBYSCORE', tickets, '-inf', now)
local members = redis.call('ZRANGE', tickets, 0, -1)
local vclock = tonumber(redis.call('GET', base .. ':vclock') or '0')
local mine = math.max(tonumber(redis.call('HGET', vts, run) or '0'), vclock)
local seen = {}
for _, m in ipairs(members) do
  local r = string.match(m, '^(.*)|[^|]*$')
  if r ~= run and not seen[r] then
    seen[r] = true
    local theirs = math.max(tonumber(redis.call('HGET', vts, r) or '0'), vclock)
    if theirs < mine then return wait(fair_wait) end
  end
end

local log = base .. ':log'
redis.call('ZREMRANGEBYSCORE', log, '-inf', now - steady_ms)
local used = redis.call('ZCARD', log)
if used >= steady_limit then
  local oldest = redis.call('ZRANGE', log, used - steady_limit, used - steady_limit, 'WITHSCORES')
  return wait(tonumber(oldest[2]) + steady_ms - now)
end
-- Shorter windows (burst, pace) as (count, ms) pairs from ARGV[8] on, checked on the same log.
for i = 8, #ARGV, 2 do
  local limit = tonumber(ARGV[i])
  local window = tonumber(ARGV[i + 1])
  local since = '(' .. tostring(now - window)
  local recent = redis.call('ZCOUNT', log, since, '+inf')
  if recent >= limit then
    local entry = redis.call('ZRANGEBYSCORE', log, since, '+inf', 'WITHSCORES', 'LIMIT', recent - limit, 1)
    return wait(tonumber(entry[2]) + window - now)
  end
end

redis.call('ZADD', log, now, member)
redis.call('PEXPIRE', log, math.ceil(steady_ms) + 1000)
redis.call('SET', base .. ':vclock', mine, 'PX', 3600000)
redis.call('HSET', vts, run, mine + 1 / weight)
redis.call('PEXPIRE', vts, 3600000)
redis.call('ZREM', tickets, member)
return 0
"""

# Pause every worker until now + ARGV[1] ms (never shortening a longer pause already set).
# ARGV[2] > 0: Klaviyo counts that many requests in its steady window; when that is more than our log
# holds (another client shares the key), log the difference as phantom grants so pacing slows down.
_OBSERVE = """
local base = KEYS[1]
local pause_ms = tonumber(ARGV[1])
local used = tonumber(ARGV[2])
local steady_ms = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
if pause_ms > 0 then
  local key = base .. ':paused'
  local current = tonumber(redis.call('GET', key) or '0')
  if now + pause_ms > current then
    redis.call('SET', key, tostring(now + pause_ms), 'PX', math.ceil(pause_ms) + 1000)
  end
end
if used > 0 then
  local log = base .. ':log'
  local mine = redis.call('ZCOUNT', log, now - steady_ms, '+inf')
  for i = 1, used - mine do
    redis.call('ZADD', log, now, 'phantom:' .. tostring(now) .. ':' .. i)
  end
  redis.call('PEXPIRE', log, math.ceil(steady_ms) + 1000)
end
return 0
"""

_WINDOW = re.compile(r"(\d+)\s*;\s*w\s*=\s*([\d.]+)")


def parse_limit_header(value: str | None) -> dict[float, int]:
    """``RateLimit-Limit: 10, 10;w=1, 150;w=60`` -> {window seconds: count}."""
    if not value:
        return {}
    return {float(w): int(n) for n, w in _WINDOW.findall(value)}


@dataclass(frozen=True)
class Windows:
    """What we allow ourselves per rolling window: counts, and lengths in (scaled) milliseconds."""

    burst: int
    burst_ms: float
    steady: int
    steady_ms: float
    pace: int  # 0 = no pacing
    pace_ms: float


@dataclass
class _Gate:
    lock: asyncio.Lock
    users: int = 0


class RateLimiter:
    """Paces requests for every worker process of every account through Redis.

    ``time_scale`` divides window lengths (to match a time-scaled simulator); ``prefix`` namespaces the
    keys (tests use their own). The margins and pace are explained in the module docstring.
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str = "klaviyo:rl",
        time_scale: float = 1.0,
        steady_margin: float = 0.97,
        burst_margin: float = 0.5,
        pace_count: int = 2,
        pace_headroom: float = 1.1,
        fair_wait: float = 0.002,
    ):
        self.redis = redis
        self.prefix = prefix
        self.time_scale = time_scale
        self.steady_margin = steady_margin
        self.burst_margin = burst_margin
        self.pace_count = pace_count
        self.pace_headroom = pace_headroom
        self._gates: dict[tuple[int, str, str, str], _Gate] = {}
        self.fair_wait = fair_wait
        self._acquire = redis.register_script(_ACQUIRE)
        self._observe = redis.register_script(_OBSERVE)

    def key(self, account: str, rate: RateClass) -> str:
        # The hash tag keeps one account's keys in one slot should Redis ever be a cluster.
        return f"{self.prefix}:{{{account}:{rate.name}}}"

    def limits(self, rate: RateClass) -> Windows:
        """The windows we hold ourselves to for ``rate``, after margins and time scaling."""
        steady = max(1, int(rate.steady * self.steady_margin))
        steady_ms = 60_000 / self.time_scale
        pace = min(self.pace_count, steady)
        pace_ms = pace * steady_ms / steady / self.pace_headroom if pace else 0.0
        return Windows(
            burst=max(1, int(rate.burst * self.burst_margin)),
            burst_ms=1000 / self.time_scale,
            steady=steady,
            steady_ms=steady_ms,
            pace=pace,
            pace_ms=pace_ms,
        )

    async def try_acquire(
        self,
        account: str,
        rate: RateClass,
        run_id: str = "default",
        weight: float = 1.0,
        ticket: str | None = None,
    ) -> int:
        """One atomic attempt: 0 when granted, else milliseconds to wait before asking again.

        ``ticket`` names the waiting caller across attempts; it also names the grant in the log, so
        it must be new for every grant.
        """
        ticket = ticket or uuid.uuid4().hex[:12]
        w = self.limits(rate)
        # Ticket grace: how long a sleeping waiter still counts as waiting; covers scheduling slop.
        grace = max(20.0, min(250.0, w.burst_ms))
        args: list[Any] = [w.steady, w.steady_ms, run_id, ticket, weight, self.fair_wait * 1000, grace]
        args += [w.burst, w.burst_ms]
        if w.pace:
            args += [w.pace, w.pace_ms]
        result = await self._acquire(keys=[self.key(account, rate)], args=args)
        return int(result)

    async def acquire(
        self, account: str, rate: RateClass, run_id: str = "default", weight: float = 1.0
    ) -> float:
        """Wait until a request may go; returns the seconds spent waiting."""
        started = time.monotonic()
        # One task per (account, class, run) in this process asks Redis at a time; the rest queue
        # here in FIFO order. Without this, every waiting task wakes when a slot frees and all but
        # one go back to sleep: a herd that costs more than the requests themselves at high rates.
        key = (id(asyncio.get_running_loop()), account, rate.name, run_id)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate(asyncio.Lock())
        gate.users += 1
        try:
            async with gate.lock:
                ticket = uuid.uuid4().hex[:12]
                granted = False
                try:
                    while True:
                        wait_ms = await self.try_acquire(account, rate, run_id, weight, ticket)
                        if wait_ms == 0:
                            granted = True
                            return time.monotonic() - started
                        await asyncio.sleep(wait_ms / 1000)
                finally:
                    if not granted:
                        # Cancelled while waiting: drop the ticket so other runs stop deferring to us.
                        await self.redis.zrem(f"{self.key(account, rate)}:tickets", f"{run_id}|{ticket}")
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._gates[key]  # runs come and go; keep no lock for a finished one

    async def pause(self, account: str, rate: RateClass, seconds: float) -> None:
        """Make every worker wait ``seconds`` (a 429's Retry-After, already time-scaled by the server)."""
        await self._observe(keys=[self.key(account, rate)], args=[seconds * 1000, 0, 1])

    async def paused_for(self, account: str, rate: RateClass) -> float:
        """Seconds left on the shared pause (0 when not paused)."""
        value = await self.redis.get(f"{self.key(account, rate)}:paused")
        if value is None:
            return 0.0
        seconds, micros = await self.redis.time()
        now_ms = seconds * 1000 + micros / 1000
        return max(0.0, (float(value) - float(now_ms)) / 1000)

    async def observe_headers(self, account: str, rate: RateClass, headers: Mapping[str, str]) -> None:
        """Correct the shared picture of the steady window from RateLimit-* headers: block until its
        reset when nothing remains, adopt a higher count than our log holds.

        Klaviyo's guide ("Rate limits, status codes, and errors") says the headers of every non-429
        answer describe the steady window, and a 429 carries only Retry-After. So they say nothing of
        the burst window: bursts are paced from our own log (held to half of Klaviyo's burst).
        """
        remaining_raw = headers.get("ratelimit-remaining")
        reset_raw = headers.get("ratelimit-reset")
        if remaining_raw is None or reset_raw is None:
            return
        try:
            remaining = int(float(remaining_raw))
            reset = float(reset_raw)
        except ValueError:
            return
        steady_ms = self.limits(rate).steady_ms
        if remaining <= 0:
            await self._observe(keys=[self.key(account, rate)], args=[reset * 1000, 0, steady_ms])
            return
        used = steady_limit(headers.get("ratelimit-limit"), rate.steady) - remaining
        if used > 0:
            await self._observe(keys=[self.key(account, rate)], args=[0, used, steady_ms])


_FIRST_COUNT = re.compile(r"^\s*(\d+)")


def steady_limit(value: str | None, default: int) -> int:
    """The steady window's count from RateLimit-Limit: its longest announced window
    (``150, 150;w=60``), else a bare count (``150``), else ``default``."""
    announced = parse_limit_header(value)
    if announced:
        return announced[max(announced)]
    found = _FIRST_COUNT.match(value or "")
    return int(found.group(1)) if found else default
