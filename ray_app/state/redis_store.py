"""The Redis state store: the same state as :class:`~ray_app.state.store.MemoryState`, in Redis,
for more than one node or serving replica.

Keys (under ``StateConfig.key_prefix``): ``h:<user>`` a sorted set of item → latest event time,
``r:<user>`` a hash of item → latest rating, ``users`` the set of users, ``trend`` a sorted set
of item → forward-scaled decayed count with its ``trend_anchor``, ``offsets`` a hash of
``<topic>/<partition>`` → next offset, ``entries`` the history-entry count. One Lua script
applies a whole batch, so a batch and its offsets land atomically (all or nothing) and two
writers never interleave inside one. It uses keys it builds itself, so it needs one Redis
server (or one Cluster hash slot), not a sharded Cluster.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis

from ray_app.errors import UserError
from ray_app.state.config import StateConfig
from ray_app.state.store import (
    REBASE_AFTER_HALF_LIVES,
    Activity,
    AppendResult,
    HistoryItem,
    StateSize,
    StateStore,
    decayed,
)

_APPEND = """
local p = ARGV[1]
local max_history = tonumber(ARGV[2])
local half_life = tonumber(ARGV[3])
local rebase_after = tonumber(ARGV[4])
local events = cjson.decode(ARGV[5])
local applied, skipped = 0, 0
local anchor = tonumber(redis.call('GET', p .. 'trend_anchor'))
for _, e in ipairs(events) do
  local tp = e[1] .. '/' .. e[2]
  local nxt = tonumber(redis.call('HGET', p .. 'offsets', tp) or '0')
  if e[3] < nxt then
    skipped = skipped + 1
  else
    redis.call('HSET', p .. 'offsets', tp, e[3] + 1)
    applied = applied + 1
    local user, item, ts = e[4], e[5], e[6]
    local hkey = p .. 'h:' .. user
    local old = redis.call('ZSCORE', hkey, item)
    if not old then
      redis.call('SADD', p .. 'users', user)
      redis.call('INCR', p .. 'entries')
      if not anchor then
        anchor = ts
        redis.call('SET', p .. 'trend_anchor', string.format('%.17g', anchor))
      end
      local exponent = (ts - anchor) / half_life
      if exponent > rebase_after then
        redis.call('ZUNIONSTORE', p .. 'trend', 1, p .. 'trend', 'WEIGHTS',
                   string.format('%.17g', 2 ^ (-exponent)))
        anchor = ts
        exponent = 0
        redis.call('SET', p .. 'trend_anchor', string.format('%.17g', anchor))
      end
      redis.call('ZINCRBY', p .. 'trend', string.format('%.17g', 2 ^ exponent), item)
    elseif tonumber(old) > ts then
      ts = tonumber(old)
    end
    redis.call('ZADD', hkey, string.format('%.17g', ts), item)
    if e[7] ~= cjson.null then
      redis.call('HSET', p .. 'r:' .. user, item, string.format('%.17g', e[7]))
    end
    local extra = redis.call('ZCARD', hkey) - max_history
    if extra > 0 then
      local gone = redis.call('ZRANGE', hkey, 0, extra - 1)
      redis.call('ZREMRANGEBYRANK', hkey, 0, extra - 1)
      redis.call('HDEL', p .. 'r:' .. user, unpack(gone))
      redis.call('DECRBY', p .. 'entries', extra)
    end
  end
end
return {applied, skipped}
"""


class RedisStateStore(StateStore):
    """A :class:`StateStore` in one Redis server (``StateConfig.url``)."""

    def __init__(self, config: StateConfig) -> None:
        self.config = config
        self.prefix = config.key_prefix
        # Typed as Any: redis-py's stubs type every reply as a union of all reply types.
        self.client: Any = redis.Redis.from_url(
            config.url,
            socket_timeout=max(config.timeout_s, 1.0),
            socket_connect_timeout=2.0,
            decode_responses=True,
        )
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise UserError(
                f"state store: cannot reach Redis at {config.url} ({exc}); start redis-server "
                "there or set state.kind: actor"
            ) from None
        self._append = self.client.register_script(_APPEND)

    def append(self, events: Sequence[Activity]) -> AppendResult:
        """See :meth:`StateStore.append`."""
        if not events:
            return AppendResult(0, 0)
        rows = [
            [e.topic, e.partition, e.offset, e.user_id, e.item_id, e.ts, e.rating] for e in events
        ]
        args: list[str | int] = [
            self.prefix,
            self.config.max_history,
            repr(self.config.trend_half_life_s),
            repr(REBASE_AFTER_HALF_LIVES),
            json.dumps(rows),
        ]
        applied, skipped = self._append(args=args)
        return AppendResult(int(applied), int(skipped))

    def histories(self, user_ids: Sequence[str]) -> list[list[HistoryItem]]:
        """See :meth:`StateStore.histories`."""
        pipe = self.client.pipeline(transaction=False)
        for u in user_ids:
            pipe.zrevrange(f"{self.prefix}h:{u}", 0, -1, withscores=True)
            pipe.hgetall(f"{self.prefix}r:{u}")
        got: list[Any] = pipe.execute()
        out = []
        for scored, ratings in zip(got[0::2], got[1::2], strict=True):
            out.append(
                [
                    HistoryItem(item, float(ts), float(ratings[item]) if item in ratings else None)
                    for item, ts in scored
                ]
            )
        return out

    def trending(self, k: int, now: float) -> list[tuple[str, float]]:
        """See :meth:`StateStore.trending`."""
        anchor = self.client.get(f"{self.prefix}trend_anchor")
        if anchor is None or k <= 0:
            return []
        # Equal counts come back in reverse lexicographic order from ZREVRANGE; the memory
        # state breaks ties by item id ascending, so re-sort on the same key.
        top = self.client.zrevrange(f"{self.prefix}trend", 0, k - 1, withscores=True)
        top = sorted(((i, float(c)) for i, c in top), key=lambda kv: (-kv[1], kv[0]))
        a, h = float(anchor), self.config.trend_half_life_s
        return [(i, decayed(c, a, now, h)) for i, c in top]

    def offsets(self) -> dict[tuple[str, int], int]:
        """See :meth:`StateStore.offsets`."""
        raw = self.client.hgetall(f"{self.prefix}offsets")
        out = {}
        for key, value in raw.items():
            topic, _, part = key.rpartition("/")
            out[(topic, int(part))] = int(value)
        return out

    def size(self) -> StateSize:
        """See :meth:`StateStore.size`."""
        p = self.prefix
        pipe = self.client.pipeline(transaction=False)
        pipe.scard(f"{p}users")
        pipe.get(f"{p}entries")
        pipe.zcard(f"{p}trend")
        users, entries, items = pipe.execute()
        return StateSize(int(users), int(entries or 0), int(items))

    def clear(self) -> None:
        """See :meth:`StateStore.clear`: deletes every key under the prefix."""
        keys = list(self.client.scan_iter(match=f"{self.prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            self.client.delete(*keys[start : start + 1000])

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()
