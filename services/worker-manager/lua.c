/*
 * The worker-manager's Redis scripts. Each runs atomically, so two managers (or two
 * polls of one manager) never lease the same job twice. Contracts are in wm.h.
 *
 * Key layout (internals.md "Redis"):
 *   wm:job:<job_id>      dispatch data JSON; kept WM_DONE_TTL_S after its lease ends so
 *                        a redelivered dispatch of the same attempt stays a no-op
 *   wm:queue:<type>      zset, member job id, score 9 - priority (ties by id = age)
 *   wm:lease:<job_id>    {"worker_id","lease_id","attempt","granted_ms"[,"confirmed"]
 *                        [,"reaping"]}; confirmed once a heartbeat listed it
 *   wm:leases            zset, job id by lease deadline (ms)
 *   wm:wleases:<wid>     set of job ids leased to one worker (for release-by-omission)
 *   wm:worker:<wid>      hash, the worker record, TTL 3 heartbeats; also last_seen_ms,
 *                        draining ("1": no new jobs), drained ("1": draining and no lease
 *                        left, forge.worker.drained sent)
 *   wm:workers           zset, worker id by last heartbeat (ms): the lost-worker scan
 *   wm:cancel:<wid>      set of job ids the worker must stop (user cancels)
 *   wm:cancelled:<jid>   tombstone of a cancelled job: a later dispatch of it is dropped
 */
#include "wm.h"

/* Decodes a JSON string or returns nil (pcall: a corrupt value must not abort a script). */
#define LUA_DECODE                                                                                 \
    "local function dec(raw)\n"                                                                    \
    "  if not raw then return nil end\n"                                                           \
    "  local ok, v = pcall(cjson.decode, raw)\n"                                                   \
    "  if ok and type(v) == 'table' then return v end\n"                                           \
    "  return nil\n"                                                                               \
    "end\n"

const char wm_lua_enqueue[] =
    LUA_DECODE "local attempt = tonumber(ARGV[2])\n"
               "if redis.call('EXISTS', KEYS[5]) == 1 then return 0 end\n"
               "local cur = dec(redis.call('GET', KEYS[1]))\n"
               "if cur and type(cur['attempt']) == 'number' and cur['attempt'] >= attempt then\n"
               "  return 0\n"
               "end\n"
               "local lease = dec(redis.call('GET', KEYS[3]))\n"
               "if lease then\n"
               "  if type(lease['attempt']) == 'number' and lease['attempt'] >= attempt then\n"
               "    return 0\n"
               "  end\n"
               "  redis.call('DEL', KEYS[3])\n"
               "  redis.call('ZREM', KEYS[4], ARGV[4])\n"
               "  if type(lease['worker_id']) == 'string' then\n"
               "    redis.call('SREM', 'wm:wleases:' .. lease['worker_id'], ARGV[4])\n"
               "  end\n"
               "end\n"
               "redis.call('SET', KEYS[1], ARGV[1])\n"
               "redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])\n"
               "return 1\n";

const char wm_lua_pop[] = LUA_DECODE
    "local wid, wgt = ARGV[1], ARGV[2]\n"
    "local wgc = tonumber(ARGV[3]) or 0\n"
    "local wl = dec(ARGV[4]) or {}\n"
    "local now, ttl, lim = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])\n"
    "if redis.call('EXISTS', KEYS[2]) == 1 then\n"
    "  if redis.call('HGET', KEYS[2], 'draining') == '1' then return -1 end\n"
    "  redis.call('EXPIRE', KEYS[2], ARGV[9])\n"
    "end\n"
    "local function matches(job)\n"
    "  local gt = job['gpu_type']\n"
    "  if type(gt) == 'string' and gt ~= '' and gt ~= wgt then return false end\n"
    "  local gc = job['gpu_count']\n"
    "  if type(gc) == 'number' and gc > wgc then return false end\n"
    "  local jl = job['labels']\n"
    "  if type(jl) == 'table' then\n"
    "    for k, v in pairs(jl) do\n"
    "      if wl[k] ~= v then return false end\n"
    "    end\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "local best, bscore, bq, bdata, bjob\n"
    "for i = 4, #KEYS do\n"
    "  local ids = redis.call('ZRANGE', KEYS[i], 0, lim - 1, 'WITHSCORES')\n"
    "  for j = 1, #ids, 2 do\n"
    "    local id, score = ids[j], tonumber(ids[j + 1])\n"
    "    if best and (score > bscore or (score == bscore and id > best)) then break end\n"
    "    local data = redis.call('GET', 'wm:job:' .. id)\n"
    "    local job = dec(data)\n"
    "    if not job then\n"
    "      redis.call('ZREM', KEYS[i], id)\n"
    "    elseif matches(job) then\n"
    "      best, bscore, bq, bdata, bjob = id, score, KEYS[i], data, job\n"
    "      break\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if not best then return false end\n"
    "redis.call('ZREM', bq, best)\n"
    "local attempt = tonumber(bjob['attempt']) or 1\n"
    "local lease = cjson.encode({worker_id = wid, lease_id = ARGV[5], attempt = attempt,\n"
    "                            granted_ms = now})\n"
    "redis.call('SET', 'wm:lease:' .. best, lease, 'PX', ttl * 4)\n"
    "redis.call('ZADD', KEYS[1], now + ttl, best)\n"
    "redis.call('SADD', KEYS[3], best)\n"
    "return {best, bdata, tostring(attempt)}\n";

const char wm_lua_heartbeat[] = LUA_DECODE
    "local wid = ARGV[1]\n"
    "local now, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local done_ttl = tonumber(ARGV[5])\n"
    "local listed, cancelled, lost, lost_leases, renewed, released = {}, {}, {}, {}, 0, 0\n"
    "for i = 8, #ARGV - 1, 2 do\n"
    "  local jid, lid = ARGV[i], ARGV[i + 1]\n"
    "  listed[jid] = true\n"
    "  local key = 'wm:lease:' .. jid\n"
    "  local raw = redis.call('GET', key)\n"
    "  local l = dec(raw)\n"
    "  if l and l['worker_id'] == wid and l['lease_id'] == lid and not l['reaping'] then\n"
    "    if not l['confirmed'] then\n"
    "      l['confirmed'] = true\n"
    "      raw = cjson.encode(l)\n"
    "    end\n"
    "    redis.call('SET', key, raw, 'PX', ttl * 4)\n"
    "    redis.call('ZADD', KEYS[1], now + ttl, jid)\n"
    "    redis.call('SADD', KEYS[3], jid)\n"
    "    renewed = renewed + 1\n"
    "    if redis.call('SISMEMBER', KEYS[4], jid) == 1 then\n"
    "      table.insert(cancelled, jid)\n"
    "    end\n"
    "  else\n"
    "    table.insert(lost, jid)\n"
    "    table.insert(lost_leases, lid)\n"
    "  end\n"
    "end\n"
    "for _, jid in ipairs(redis.call('SMEMBERS', KEYS[3])) do\n"
    "  if not listed[jid] then\n"
    "    local l = dec(redis.call('GET', 'wm:lease:' .. jid))\n"
    "    if not l or l['worker_id'] ~= wid then\n"
    "      redis.call('SREM', KEYS[3], jid)\n"
    "    elseif l['confirmed'] and not l['reaping'] then\n"
    "      redis.call('DEL', 'wm:lease:' .. jid)\n"
    "      redis.call('ZREM', KEYS[1], jid)\n"
    "      redis.call('SREM', KEYS[3], jid)\n"
    "      redis.call('SREM', KEYS[4], jid)\n"
    "      redis.call('EXPIRE', 'wm:job:' .. jid, done_ttl)\n"
    "      released = released + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local pg, draining, drained = 0, 0, 0\n"
    "if redis.call('EXISTS', KEYS[2]) == 1 then\n"
    "  redis.call('HSET', KEYS[2], 'last_seen_ms', ARGV[2])\n"
    "  redis.call('EXPIRE', KEYS[2], ARGV[4])\n"
    "  local st = redis.call('HMGET', KEYS[2], 'draining', 'drained', 'pg_seen_ms')\n"
    "  if ARGV[7] == '1' and st[1] ~= '1' then\n"
    "    redis.call('HSET', KEYS[2], 'draining', '1')\n"
    "    st[1] = '1'\n"
    "    pg = 1\n"
    "  end\n"
    "  if st[1] == '1' then draining = 1 end\n"
    "  if st[2] == '1' then\n"
    "    drained = 2\n"
    "  elseif draining == 1 and redis.call('SCARD', KEYS[3]) == 0 then\n"
    "    redis.call('HSET', KEYS[2], 'drained', '1')\n"
    "    redis.call('ZREM', KEYS[5], wid)\n"
    "    drained, pg = 1, 1\n"
    "  else\n"
    "    redis.call('ZADD', KEYS[5], now, wid)\n"
    "  end\n"
    "  local seen = tonumber(st[3] or '0') or 0\n"
    "  if now - seen >= tonumber(ARGV[6]) then pg = 1 end\n"
    "  if pg == 1 then redis.call('HSET', KEYS[2], 'pg_seen_ms', ARGV[2]) end\n"
    "end\n"
    "return {pg, cancelled, renewed, released, lost, draining, drained, lost_leases}\n";

const char wm_lua_reap_claim[] = LUA_DECODE
    "local now, reclaim = tonumber(ARGV[1]), tonumber(ARGV[3])\n"
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[2])\n"
    "local out = {}\n"
    "for _, jid in ipairs(ids) do\n"
    "  local l = dec(redis.call('GET', 'wm:lease:' .. jid))\n"
    "  local enc = ''\n"
    "  if l then\n"
    "    l['reaping'] = true\n"
    "    enc = cjson.encode(l)\n"
    "    redis.call('SET', 'wm:lease:' .. jid, enc, 'PX', reclaim * 4)\n"
    "  end\n"
    "  redis.call('ZADD', KEYS[1], now + reclaim, jid)\n"
    "  table.insert(out, jid)\n"
    "  table.insert(out, enc)\n"
    "  table.insert(out, redis.call('GET', 'wm:job:' .. jid) or '')\n"
    "end\n"
    "return out\n";

const char wm_lua_reap_done[] =
    LUA_DECODE "local jid = ARGV[1]\n"
               "local l = dec(redis.call('GET', 'wm:lease:' .. jid))\n"
               "if l then\n"
               "  if ARGV[2] ~= '' and l['lease_id'] ~= ARGV[2] then return 0 end\n"
               "  redis.call('DEL', 'wm:lease:' .. jid)\n"
               "  if type(l['worker_id']) == 'string' then\n"
               "    redis.call('SREM', 'wm:wleases:' .. l['worker_id'], jid)\n"
               "    redis.call('SREM', 'wm:cancel:' .. l['worker_id'], jid)\n"
               "  end\n"
               "end\n"
               "redis.call('ZREM', KEYS[1], jid)\n"
               "redis.call('EXPIRE', 'wm:job:' .. jid, ARGV[3])\n"
               "return 1\n";

const char wm_lua_requeue[] =
    LUA_DECODE "local jid = ARGV[1]\n"
               "local l = dec(redis.call('GET', 'wm:lease:' .. jid))\n"
               "if not l or l['lease_id'] ~= ARGV[2] then return 0 end\n"
               "redis.call('DEL', 'wm:lease:' .. jid)\n"
               "redis.call('ZREM', KEYS[1], jid)\n"
               "redis.call('SREM', 'wm:wleases:' .. l['worker_id'], jid)\n"
               "redis.call('ZADD', KEYS[2], ARGV[3], jid)\n"
               "return 1\n";

const char wm_lua_lost_claim[] =
    "local out = {}\n"
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT',\n"
    "                       0, ARGV[2])\n"
    "for i = 1, #ids, 2 do\n"
    "  local wid, seen = ids[i], ids[i + 1]\n"
    "  redis.call('ZREM', KEYS[1], wid)\n"
    "  local fresh = redis.call('HGET', 'wm:worker:' .. wid, 'last_seen_ms')\n"
    "  if fresh and tonumber(fresh) > tonumber(ARGV[1]) then\n"
    "    redis.call('ZADD', KEYS[1], fresh, wid)\n"
    "  else\n"
    "    table.insert(out, wid)\n"
    "    table.insert(out, seen)\n"
    "    table.insert(out, redis.call('SMEMBERS', 'wm:wleases:' .. wid))\n"
    "  end\n"
    "end\n"
    "return out\n";

const char wm_lua_drain[] =
    LUA_DECODE "local wid = ARGV[1]\n"
               "if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end\n"
               "if redis.call('HGET', KEYS[1], 'drained') == '1' then return 2 end\n"
               "redis.call('HSET', KEYS[1], 'draining', '1')\n"
               "for _, jid in ipairs(redis.call('SMEMBERS', KEYS[2])) do\n"
               "  local l = dec(redis.call('GET', 'wm:lease:' .. jid))\n"
               "  if not l or l['worker_id'] ~= wid then redis.call('SREM', KEYS[2], jid) end\n"
               "end\n"
               "if redis.call('SCARD', KEYS[2]) == 0 then\n"
               "  redis.call('HSET', KEYS[1], 'drained', '1')\n"
               "  redis.call('ZREM', KEYS[3], wid)\n"
               "  return 3\n"
               "end\n"
               "return 1\n";

const char wm_lua_cancel[] =
    LUA_DECODE "local jid = ARGV[1]\n"
               "redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])\n"
               "local job = dec(redis.call('GET', KEYS[1]))\n"
               "if job and type(job['job_type']) == 'string' and\n"
               "   redis.call('ZREM', 'wm:queue:' .. job['job_type'], jid) == 1 then\n"
               "  redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
               "  return {'dequeued', ''}\n"
               "end\n"
               "local l = dec(redis.call('GET', KEYS[2]))\n"
               "if l and type(l['worker_id']) == 'string' then\n"
               "  redis.call('SADD', 'wm:cancel:' .. l['worker_id'], jid)\n"
               "  return {'signalled', l['worker_id']}\n"
               "end\n"
               "return {'unknown', ''}\n";

const char wm_lua_lease_check[] =
    LUA_DECODE "local l = dec(redis.call('GET', KEYS[1]))\n"
               "if not l then return 0 end\n"
               "if l['worker_id'] ~= ARGV[1] or l['lease_id'] ~= ARGV[2] or l['reaping'] then\n"
               "  return 0\n"
               "end\n"
               "if tonumber(l['attempt']) ~= tonumber(ARGV[3]) then return 0 end\n"
               "return 1\n";

const char wm_lua_fleet[] =
    LUA_DECODE "local out = {}\n"
               "for i = 1, #ARGV do\n"
               "  local wid = ARGV[i]\n"
               "  local st = redis.call('HMGET', 'wm:worker:' .. wid, 'last_seen_ms', 'draining')\n"
               "  local jobs = {}\n"
               "  for _, jid in ipairs(redis.call('SMEMBERS', 'wm:wleases:' .. wid)) do\n"
               "    local l = dec(redis.call('GET', 'wm:lease:' .. jid))\n"
               "    if l and l['worker_id'] == wid then table.insert(jobs, jid) end\n"
               "  end\n"
               "  table.sort(jobs)\n"
               "  local owners = {}\n"
               "  for k, jid in ipairs(jobs) do\n"
               "    local j = dec(redis.call('GET', 'wm:job:' .. jid))\n"
               "    owners[k] = (j and type(j['user_id']) == 'string') and j['user_id'] or ''\n"
               "  end\n"
               "  table.insert(out, {st[1] or '', st[2] or '', jobs, owners})\n"
               "end\n"
               "return out\n";
