"""Every Lua script imflow runs in Redis, in one place (the keys are in app/stores/keys.py).

A script gets all its keys as KEYS, so Redis Cluster can route it, and names in a comment
what its KEYS and ARGV are. Each is used by one store, named with it.
"""

from __future__ import annotations

# Used by InboxStore.deliver.
# KEYS per delivery: inbox, applied, convs, read markers, unread seqs of this conversation.
# ARGV: minid, ttl_s, the number of payloads n, the n payloads, then per delivery:
# conversation, seq, role, payload index (1-based), where role is "o" (from someone else:
# unread unless already read), "s" (the user's own: read) or "e". Each payload is sent
# once per call, however many inboxes it goes to (a group event can be 100s of KB).
DELIVER = """
local minid = ARGV[1]
local ttl = tonumber(ARGV[2])
local first = 4 + tonumber(ARGV[3])
local written = 0
local k = 1
for i = first, #ARGV, 4 do
  local inbox, applied, convs, read, unread = KEYS[k], KEYS[k+1], KEYS[k+2], KEYS[k+3], KEYS[k+4]
  k = k + 5
  local conv, seq, role = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local payload = ARGV[3 + tonumber(ARGV[i + 3])]
  local last = tonumber(redis.call('HGET', applied, conv) or '0')
  if seq > last then
    redis.call('XADD', inbox, 'MINID', minid, '*', 'm', payload)
    redis.call('HSET', applied, conv, seq)
    redis.call('HSET', convs, conv, payload)
    local read_seq = tonumber(redis.call('HGET', read, conv) or '0')
    if role == 'o' and seq > read_seq then
      redis.call('ZADD', unread, seq, seq)
      redis.call('EXPIRE', unread, ttl)
    elseif role == 's' and seq > read_seq then
      redis.call('HSET', read, conv, seq)
      redis.call('ZREMRANGEBYSCORE', unread, '-inf', seq)
      redis.call('EXPIRE', read, ttl)
    end
    redis.call('EXPIRE', inbox, ttl)
    redis.call('EXPIRE', applied, ttl)
    redis.call('EXPIRE', convs, ttl)
    written = written + 1
  end
end
return written
"""

# Used by InboxStore.mark_read.
# KEYS: read markers, unread seqs of the conversation; ARGV: conversation, seq, ttl_s.
MARK_READ = """
local seq = tonumber(ARGV[2])
if seq > tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') then
  redis.call('HSET', KEYS[1], ARGV[1], seq)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', seq)
return redis.call('ZCARD', KEYS[2])
"""

# Used by FeedStore.append, for an entry that changes no member's span (a message).
# KEYS: feed, feedseq. ARGV: minid, ttl_s, seq, payload. Returns 1 if appended, 0 if
# already there.
APPEND_FEED = """
local seq = tonumber(ARGV[3])
if seq <= tonumber(redis.call('GET', KEYS[2]) or '0') then return 0 end
local ttl = tonumber(ARGV[2])
redis.call('XADD', KEYS[1], 'MINID', ARGV[1], '*', 'm', ARGV[4])
redis.call('SET', KEYS[2], seq, 'EX', ttl)
redis.call('EXPIRE', KEYS[1], ttl)
return 1
"""

# Used by FeedStore.append, step 1 of 3 of an entry that opens or closes spans (a
# membership change): the stream id the entry will get, after the feed's newest, kept in
# feedpending until step 3 appends it, so a retry after a crash reuses it.
# KEYS: feed, feedseq, feedpending. ARGV: ttl_s, seq. Returns the id, or nil when the seq
# was applied already (all three steps).
RESERVE_FEED_ENTRY = """
if tonumber(ARGV[2]) <= tonumber(redis.call('GET', KEYS[2]) or '0') then return false end
local id = redis.call('HGET', KEYS[3], ARGV[2])
if not id then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
  id = ms .. '-0'
  if newest then
    local last_ms, last_n = string.match(newest[1], '(%d+)-(%d+)')
    if tonumber(last_ms) >= ms then id = last_ms .. '-' .. (tonumber(last_n) + 1) end
  end
  redis.call('HSET', KEYS[3], ARGV[2], id)
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[1]))
end
return id
"""

# Used by FeedStore.append, step 2: the spans of changed members (one cluster slot per
# call). KEYS: their spans hashes. ARGV: conversation, entry id, seq, then per key "o" (a
# span opens at the entry) or "c" (it closes there). Idempotent: an open span is not
# opened again, a closed one not closed again.
UPDATE_SPANS = """
local MAX_SPANS = 16 -- per member and group: who is removed and re-added more keeps the latest
local cid, id, seq = ARGV[1], ARGV[2], tonumber(ARGV[3])
for i = 1, #KEYS do
  local raw = redis.call('HGET', KEYS[i], cid)
  local spans = raw and cjson.decode(raw) or {}
  local last = spans[#spans]
  if ARGV[3 + i] == 'o' then
    if not last or last.t then
      table.insert(spans, {f = id, fs = seq})
      if #spans > MAX_SPANS then table.remove(spans, 1) end
      redis.call('HSET', KEYS[i], cid, cjson.encode(spans))
    end
  elseif last and not last.t then
    last.t = id
    last.ts = seq
    redis.call('HSET', KEYS[i], cid, cjson.encode(spans))
  end
end
return #KEYS
"""

# Used by FeedStore.append, step 3: the entry is appended at its reserved id and counts
# (feedseq) in one call, so it and its spans become visible together; its newly opened
# members join the feed's users. KEYS: feed, feedseq, feedusers, feedpending. ARGV:
# minid, ttl_s, seq, entry id, payload, then the users whose span opened.
FINISH_FEED_ENTRY = """
local seq, ttl = tonumber(ARGV[3]), tonumber(ARGV[2])
if seq <= tonumber(redis.call('GET', KEYS[2]) or '0') then return 0 end
redis.call('XADD', KEYS[1], 'MINID', ARGV[1], ARGV[4], 'm', ARGV[5])
redis.call('SET', KEYS[2], seq, 'EX', ttl)
redis.call('EXPIRE', KEYS[1], ttl)
for i = 6, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
redis.call('HDEL', KEYS[4], ARGV[3])
return 1
"""

# Used by GroupStore.apply.
# KEYS: group hash, member set; ARGV: seq, op, owner, members...
APPLY_MEMBERS = """
local seq = tonumber(ARGV[1])
if seq <= tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') then return 0 end
local op = ARGV[2]
for i = 4, #ARGV do
  if op == 'remove' then redis.call('SREM', KEYS[2], ARGV[i])
  else redis.call('SADD', KEYS[2], ARGV[i]) end
end
redis.call('HSET', KEYS[1], 'seq', seq, 'owner', ARGV[3])
return 1
"""

# Used by GroupStore.restore: a group's membership as the sequencer's changelog has it
# at `seq` (its conversation's last seq), unless the projection is there already.
# KEYS: group hash, member set; ARGV: seq, owner, members... Returns 1 if written.
RESTORE_MEMBERS = """
local seq = tonumber(ARGV[1])
if seq <= tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') then return 0 end
redis.call('DEL', KEYS[2])
for i = 3, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
redis.call('HSET', KEYS[1], 'seq', seq, 'owner', ARGV[2])
return 1
"""

# Used by RateLimiter.
# KEYS: one user's counter of one 1 s window per user; ARGV: the sends to add to each.
# Returns each counter's total.
ADD_SENDS = """
local totals = {}
for i = 1, #KEYS do
  totals[i] = redis.call('INCRBY', KEYS[i], ARGV[i])
  redis.call('PEXPIRE', KEYS[i], 2000)
end
return totals
"""

# Used by PushPublisher.
# KEYS: the presence key of each recipient of each record, in order (one cluster slot per
# call). ARGV: the publish command ("PUBLISH", or "SPUBLISH" on Redis Cluster: a sharded
# channel stays on its slot's shard instead of being broadcast to every node), then per
# record: the number of its recipients, its payload, then the channel of each.
PUBLISH_ONLINE = """
local publish = ARGV[1]
local sent, k, i = 0, 1, 2
while i <= #ARGV do
  local n, payload = tonumber(ARGV[i]), ARGV[i + 1]
  for j = 1, n do
    if redis.call('EXISTS', KEYS[k]) == 1 then
      redis.call(publish, ARGV[i + 1 + j], payload)
      sent = sent + 1
    end
    k = k + 1
  end
  i = i + 2 + n
end
return sent
"""

# Used by PresenceStore.disconnected.
# Remove a device's presence only if it still names this connection.
DISCONNECT = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""
