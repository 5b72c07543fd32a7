"""Shared rate limiter in Redis: Klaviyo's burst and steady windows per (account, rate class), checked
atomically in one Lua script, a shared pause set by any 429, and fair turns between concurrent runs.

Klaviyo counts in fixed windows whose alignment we cannot see. We keep a log of grant times and allow
at most N grants in ANY interval of the window's length: that never exceeds a fixed window of that
length, whatever its alignment, and sustains the same rate. Burst is held to half by default so the
jitter between our grant and Klaviyo's arrival time cannot put two of our bursts into one of its windows.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping
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
local burst_limit = tonumber(ARGV[1])
local burst_ms = tonumber(ARGV[2])
local steady_limit = tonumber(ARGV[3])
local steady_ms = tonumber(ARGV[4])
local run = ARGV[5]
local member = run .. '|' .. ARGV[6]
local weight = tonumber(ARGV[7])
local fair_wait = tonumber(ARGV[8])
local grace = tonumber(ARGV[9])
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
local since = '(' .. tostring(now - burst_ms)
local recent = redis.call('ZCOUNT', log, since, '+inf')
if recent >= burst_limit then
  local offset = recent - burst_limit
  local entry = redis.call('ZRANGEBYSCORE', log, since, '+inf', 'WITHSCORES', 'LIMIT', offset, 1)
  return wait(tonumber(entry[2]) + burst_ms - now)
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


class RateLimiter:
    """Paces requests for every worker process of every account through Redis."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = "klaviyo:rl",
        time_scale: float = 1.0,
        steady_margin: float = 0.97,
        burst_margin: float = 0.5,
        fair_wait: float = 0.002,
    ):
        self.redis = redis
        self.prefix = prefix
        self.time_scale = time_scale
        self.steady_margin = steady_margin
        self.burst_margin = burst_margin
        self.fair_wait = fair_wait
        self._acquire = redis.register_script(_ACQUIRE)
        self._observe = redis.register_script(_OBSERVE)

    def key(self, account: str, rate: RateClass) -> str:
        # The hash tag keeps one account's keys in one slot should Redis ever be a cluster.
        return f"{self.prefix}:{{{account}:{rate.name}}}"

    def limits(self, rate: RateClass) -> tuple[int, float, int, float]:
        """(burst count, burst ms, steady count, steady ms) after margins and time scaling."""
        burst = max(1, int(rate.burst * self.burst_margin))
        steady = max(1, int(rate.steady * self.steady_margin))
        return burst, 1000 / self.time_scale, steady, 60_000 / self.time_scale

    async def try_acquire(
        self, account: str, rate: RateClass, run_id: str = "default", weight: float = 1.0, ticket: str = "-"
    ) -> int:
        """One atomic attempt: 0 when granted, else milliseconds to wait before asking again."""
        burst, burst_ms, steady, steady_ms = self.limits(rate)
        # Ticket grace: how long a sleeping waiter still counts as waiting; covers scheduling slop.
        grace = max(20.0, min(250.0, burst_ms))
        args: list[Any] = [
            burst,
            burst_ms,
            steady,
            steady_ms,
            run_id,
            ticket,
            weight,
            self.fair_wait * 1000,
            grace,
        ]
        result = await self._acquire(keys=[self.key(account, rate)], args=args)
        return int(result)

    async def acquire(
        self, account: str, rate: RateClass, run_id: str = "default", weight: float = 1.0
    ) -> float:
        """Wait until a request may go; returns the seconds spent waiting."""
        ticket = uuid.uuid4().hex[:12]
        waited = 0.0
        granted = False
        try:
            while True:
                wait_ms = await self.try_acquire(account, rate, run_id, weight, ticket)
                if wait_ms == 0:
                    granted = True
                    return waited
                await asyncio.sleep(wait_ms / 1000)
                waited += wait_ms / 1000
        finally:
            if not granted:
                # Cancelled while waiting: drop the ticket so other runs stop deferring to us.
                await self.redis.zrem(f"{self.key(account, rate)}:tickets", f"{run_id}|{ticket}")

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
        """Correct the shared picture from RateLimit-* headers: block on 0 remaining, adopt higher counts."""
        remaining_raw = headers.get("ratelimit-remaining")
        reset_raw = headers.get("ratelimit-reset")
        if remaining_raw is None or reset_raw is None:
            return
        try:
            remaining = int(float(remaining_raw))
            reset = float(reset_raw)
        except ValueError:
            return
        _, burst_ms, _, steady_ms = self.limits(rate)
        if remaining <= 0:
            await self._observe(keys=[self.key(account, rate)], args=[reset * 1000, 0, steady_ms])
            return
        # Remaining is the smaller of the two windows; a reset longer than a burst window means it is
        # the steady window's, whose count is worth adopting when higher than ours.
        if reset * 1000 > burst_ms:
            windows = parse_limit_header(headers.get("ratelimit-limit"))
            # The longest window is the steady one (its length is time-scaled by the server).
            steady_limit = windows[max(windows)] if windows else rate.steady
            used = steady_limit - remaining
            if used > 0:
                args = [0, used, steady_ms]
                await self._observe(keys=[self.key(account, rate)], args=args)
