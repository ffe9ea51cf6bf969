/**
 * The Lua HAProxy runs for the strangler engine (lua-load), only where haproxy.cfg cannot decide
 * natively (a plain path to a legacy, service or unscoped canary route takes no Lua at all):
 * - strangler_path, for a path that is not plain: normalised and the tricks refused exactly as
 *   path-normalize.ts does; also drops the headers a request's Connection header lists;
 * - strangler_route, for fenced and method-scoped routes and fnv1a canaries: the route by longest
 *   prefix on segment boundaries in the routes map the agent replaces through the Runtime API; the
 *   side by route-choice.ts' rules, canary users bucketed by THE SAME hash as canary.ts (the
 *   route's: xxh32 over the UTF-8 bytes of `service:key`, or FNV-1a then murmur3's fmix32 over
 *   their UTF-16 code units); writes to a fenced prefix held until the map lifts the fence, its
 *   lease runs out, or fenceHoldMs passes (503);
 * - strangler_response: drops the headers a response's Connection header lists.
 * Both request actions fail closed (500). CONFIG is the prelude render-config.ts writes.
 */
export const STRANGLER_LUA = String.raw`
local routes = Map.new(CONFIG.routesMap, Map._str)
local routes_fast = Map.new(CONFIG.fastMap, Map._beg)
local SAFE = { GET = true, HEAD = true, OPTIONS = true }
local HEX = "0123456789ABCDEF"
math.randomseed(os.time() + core.now().usec)

-- ── path normalisation (path-normalize.ts) ─────────────────────────────────────────────────
local function hexv(c)
  if not c then return -1 end
  if c >= 48 and c <= 57 then return c - 48 end
  if c >= 65 and c <= 70 then return c - 55 end
  if c >= 97 and c <= 102 then return c - 87 end
  return -1
end

local function is_plain(p)
  return not (p:find("[%%;\\%c ]") or p:find("//", 1, true) or p:find("/.", 1, true))
end

local function normalize(raw)
  if raw:byte(1) ~= 47 then return nil, 'the path must start with "/"' end
  local path = raw
  if not is_plain(raw) then
    local out, i, n = {}, 1, #raw
    while i <= n do
      local c = raw:byte(i)
      if c < 32 or c == 127 then return nil, "control characters are not allowed in the path" end
      if c == 32 then return nil, "a raw space is not allowed in the path" end
      if c == 92 then return nil, "backslashes are not allowed in the path" end
      if c == 59 then return nil, 'path parameters (";") are not accepted: upstreams disagree on what they mean' end
      if c ~= 37 then
        out[#out + 1] = string.char(c)
        i = i + 1
      else
        local hi, lo = hexv(raw:byte(i + 1)), hexv(raw:byte(i + 2))
        if hi < 0 or lo < 0 then return nil, "malformed percent-encoding in the path" end
        local b = hi * 16 + lo
        i = i + 3
        if b == 0x2f or b == 0x5c then return nil, "encoded slashes (%2F, %5C) are not allowed in the path" end
        if b < 0x20 or b == 0x7f then return nil, "encoded control characters are not allowed in the path" end
        local ch = string.char(b)
        if b < 0x80 and ch:find("^[A-Za-z0-9%-%._~]$") then out[#out + 1] = ch
        else out[#out + 1] = "%" .. HEX:sub(hi + 1, hi + 1) .. HEX:sub(lo + 1, lo + 1) end
      end
    end
    local segs = {}
    for seg in (table.concat(out) .. "/"):gmatch("([^/]*)/") do segs[#segs + 1] = seg end
    local res = {}
    for k = 2, #segs do
      local seg, last = segs[k], k == #segs
      if seg == "" and not last then
        -- merged slash
      elseif seg == "." then
        if last then res[#res + 1] = "" end
      elseif seg == ".." then
        if #res == 0 or (#res == 1 and res[1] == "") then return nil, 'the path climbs above the root ("..")' end
        res[#res] = nil
        if last then res[#res + 1] = "" end
      else
        res[#res + 1] = seg
      end
    end
    path = "/" .. table.concat(res, "/")
  end
  local m = path:lower()
  if #m > 1 and m:sub(-1) == "/" then
    m = m:gsub("/+$", "")
    if m == "" then m = "/" end
  end
  return path, m
end

-- The longest prefix of m (on segment boundaries) for which has(prefix) answers, and its answer.
local function longest(m, has)
  local p = m
  while true do
    local v = has(p)
    if v then return p, v end
    if p == "/" then return nil end
    local cut = p:match("^(.*)/[^/]*$")
    p = (cut == nil or cut == "") and "/" or cut
  end
end

local function lookup_route(p) return routes:lookup(p) end

-- A map value: "<service> <mode> <weight> <fenceUntil ms, 0: none> <methods, comma-separated, or *> <canary hash>".
local parsed = {}
local function parse_route(v)
  local r = parsed[v]
  if r then return r end
  local service, mode, weight, fence, methods, hash = v:match("^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$")
  r = { service = service, mode = mode, weight = tonumber(weight) or 0, fenceUntil = tonumber(fence) or 0, hash = hash }
  if methods ~= "*" then
    r.methods = {}
    for m in methods:gmatch("[^,]+") do r.methods[m] = true end
  end
  parsed[v] = r
  return r
end

local function now_ms()
  local t = core.now()
  return t.sec * 1000 + t.usec // 1000
end

-- ── canary (canary.ts: the same bucket for the same user on both engines) ──────────────────
-- fnv1a, for canaries begun before xxh32 (a canary keeps its hash while it runs).
local function hash32(s)
  local h = 0x811c9dc5
  local function step(u)
    h = h ~ u
    h = (h * 0x01000193) & 0xffffffff
  end
  local ok = true
  if s:find("[\128-\255]") then
    -- JavaScript hashes UTF-16 code units: decode UTF-8 and split astral code points into surrogates.
    ok = pcall(function()
      local units = {}
      for _, cp in utf8.codes(s) do
        if cp >= 0x10000 then
          cp = cp - 0x10000
          units[#units + 1] = 0xD800 + (cp >> 10)
          units[#units + 1] = 0xDC00 + (cp & 0x3FF)
        else
          units[#units + 1] = cp
        end
      end
      for _, u in ipairs(units) do step(u) end
    end)
    if not ok then h = 0x811c9dc5 end
  end
  if not ok or not s:find("[\128-\255]") then for i = 1, #s do step(s:byte(i)) end end
  h = h ~ (h >> 16)
  h = (h * 0x85ebca6b) & 0xffffffff
  h = h ~ (h >> 13)
  h = (h * 0xc2b2ae35) & 0xffffffff
  h = h ~ (h >> 16)
  return h
end

-- xxh32 is HAProxy's own converter, the one the cfg buckets unscoped canaries with.
local function on_service_side(txn, key, r)
  local s = r.service .. ":" .. key
  local h = r.hash == "fnv1a" and hash32(s) or txn.c:xxh32(s)
  return h % 10000 < math.floor(r.weight * 100 + 0.5)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local function new_cookie_value()
  local t = {}
  for i = 1, 22 do
    local k = math.random(1, 64)
    t[i] = B64:sub(k, k)
  end
  return table.concat(t)
end

-- ── answers ────────────────────────────────────────────────────────────────────────────────
local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

local function refuse(txn, status, code, message, headers)
  local reply = txn:reply()
  reply:set_status(status)
  reply:add_header("content-type", "application/json; charset=utf-8")
  reply:add_header("x-request-id", txn:get_var("txn.request_id") or "")
  for k, v in pairs(headers or {}) do reply:add_header(k, v) end
  reply:set_body('{"error":{"code":' .. json_string(code) .. ',"message":' .. json_string(message) .. "}}")
  txn:done(reply)
end

-- Writes held by the fence right now (gateway.fenceMaxHeld bounds them).
local held = 0

-- Headers a Connection header lists are for one hop only (RFC 9110 §7.6.1): never passed on.
local function drop_listed(value, del)
  for tok in (value or ""):gmatch("[^,%s]+") do
    local t = tok:lower()
    if t ~= "close" and t ~= "keep-alive" then del(t) end
  end
end

-- ── the request ────────────────────────────────────────────────────────────────────────────
local function choose(txn, route, method, key_fn)
  if not route then return "legacy", nil end
  local r = parse_route(route)
  if not CONFIG.services[r.service] then return "legacy", nil end
  if r.methods and not r.methods[method] then return "legacy", r end
  if r.mode == "canary" then
    local key = key_fn()
    if key and on_service_side(txn, key, r) then return "service", r end
    return "legacy", r
  end
  if r.mode == "service" then return "service", r end
  return "legacy", r -- legacy; shadow (served by legacy: mirroring is the Node engine's)
end

local function denial(status, code, message, headers)
  return { status = status, code = code, message = message, headers = headers }
end

-- ── the path (only for requests whose path is not plain, or whose Connection lists headers) ──
local function normalise(txn)
  local raw = txn.sf:path() or "/"
  local path, m = normalize(raw)
  -- SECURITY: a path this engine cannot read exactly as the upstream will is refused, never guessed.
  if not path then return denial(400, "BAD_INPUT", "the request path is refused: " .. m) end
  if path ~= raw then txn.http:req_set_path(path) end
  txn:set_var("txn.mp", m .. "/")
  txn:set_var("txn.fast", routes_fast:lookup(m .. "/") or "")
  if txn.f:req_hdr_cnt("connection") > 0 then
    -- A WebSocket handshake keeps its Upgrade (and the Connection naming it); anything else listed goes.
    local ws = (txn.sf:req_hdr("upgrade") or ""):lower() == "websocket"
    drop_listed(txn.sf:req_fhdr("connection"), function(h) if not (ws and h == "upgrade") then txn.http:req_del_header(h) end end)
    if not ws then txn.http:req_del_header("connection") end -- HAProxy sets the upstream connection's own mode
  end
end

-- ── the route (only for routes the cfg cannot decide alone: canary, fenced, method-scoped) ──
local function route_request(txn)
  local mp = txn:get_var("txn.mp") or "/"
  local m = mp == "//" and "/" or mp:sub(1, -2)
  local issuer = txn:get_var("txn.jwt_issuer")
  local sub = issuer and txn:get_var("txn.jwt_sub")
  local method = txn.sf:method()
  local prefix, route = longest(m, lookup_route)
  -- The switchover fence: writes wait for a table that lifts it (or its lease), at most fenceHoldMs.
  if route and not SAFE[method] then
    local r = parse_route(route)
    if r.fenceUntil > 0 and now_ms() < r.fenceUntil then
      if held >= CONFIG.fenceMaxHeld then
        return denial(503, "NOT_READY", "writes to " .. prefix .. " are held for a switchover that has not finished; retry shortly", { ["retry-after"] = "1" })
      end
      held = held + 1
      local deadline = now_ms() + CONFIG.fenceHoldMs
      local released = false
      while now_ms() < deadline do
        core.msleep(10)
        prefix, route = longest(m, lookup_route)
        if not route then released = true break end
        local again = parse_route(route)
        if again.fenceUntil == 0 or now_ms() >= again.fenceUntil then released = true break end
      end
      held = held - 1
      if not released then
        return denial(503, "NOT_READY", "writes to " .. prefix .. " are held for a switchover that has not finished; retry shortly", { ["retry-after"] = "1" })
      end
    end
  end

  if prefix then txn:set_var("txn.prefix", prefix) end
  local side, r = choose(txn, route, method, function()
    if issuer and sub then return sub end
    local c = txn.sf:req_cook(CONFIG.canaryCookie)
    if c and c:find("^[A-Za-z0-9_-]+$") and #c >= 16 and #c <= 64 then return c end
    c = new_cookie_value()
    txn:set_var("txn.set_cookie", CONFIG.canaryCookie .. "=" .. c .. "; " .. CONFIG.canaryCookieAttributes)
    return c
  end)
  local backend = CONFIG.legacyBackend
  if side == "service" then
    local safe = SAFE[method] or (txn.sf:req_hdr("idempotency-key") or "") ~= ""
    -- Safe requests (and every canary request) may be served by legacy when no instance is up (its backup server).
    backend = (safe or r.mode == "canary") and CONFIG.services[r.service].backend or CONFIG.services[r.service].strictBackend
  end
  txn:set_var("txn.backend", backend)
  if r then
    txn:set_var("txn.fig_svc", r.service)
    txn:set_var("txn.fig_side", side)
  end
end

local function action(name, fn)
  core.register_action(name, { "http-req" }, function(txn)
    -- SECURITY: fail closed: an error in the checks refuses the request (a failed action would let it through unchecked).
    local ok, refused = pcall(fn, txn)
    if not ok then
      core.Alert(name .. ": " .. tostring(refused))
      return refuse(txn, 500, "INTERNAL", "internal gateway error")
    end
    if refused then return refuse(txn, refused.status, refused.code, refused.message, refused.headers) end
  end, 0)
end
action("strangler_path", normalise)
action("strangler_route", route_request)

local function observe(txn)
  drop_listed(txn.sf:res_fhdr("connection"), function(h) txn.http:res_del_header(h) end)
end

core.register_action("strangler_response", { "http-res" }, function(txn)
  local ok, err = pcall(observe, txn)
  if not ok then core.Alert("strangler_response: " .. tostring(err)) end
end, 0)
`;
