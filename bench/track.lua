-- wrk script for bench/throughput.py: every request is a new session's beacon batch.
--
--   wrk -t1 -c32 -d15s --timeout 30s --latency -s bench/track.lua http://127.0.0.1:PORT/v1/track -- EVENTS TAG ACCOUNT [RATE]
--
-- EVENTS per batch: a view, then (from 2 on) a first_frame, then heartbeats of 1 s watched each.
-- Sessions, videos, client addresses (X-Forwarded-For: the bench runs vidpulse with
-- VIDPULSE_TRUSTED_PROXIES=127.0.0.1) and User-Agents vary per request; event ids repeat across
-- sessions, as real players' do. Every response is counted by status, and the tracker's own count
-- of accepted events is summed from the 202 bodies, so the script can check the API's totals after.
-- At the end one line "RESULT {json}" carries the counts and the latency percentiles.
-- RATE (optional, requests/s per thread): paced, the k-th request of a thread is sent no earlier than
-- k/RATE s after its first, so the offered load stays at RATE whatever the answers' latency (within
-- what the connections can carry); without it, every connection sends as soon as it has its answer.

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } vidpulse_timespec;
int clock_gettime(int clock_id, vidpulse_timespec *tp);
]]
local clock = ffi.new("vidpulse_timespec")

local function now_ms()
  ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("id", thread_count)
  table.insert(threads, thread)
end

-- Browsers and devices of real players (no bot: a bot's events are raw only, in no metric).
local agents = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
  "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 13; SM-T870) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67",
  "Mozilla/5.0 (SMART-TV; Linux; Tizen 7.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/5.0 Chrome/94.0.4606.31 TV Safari/537.36",
  "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/94.0.4606.128 Safari/537.36 WebAppManager",
  "Mozilla/5.0 (PlayStation; PlayStation 5/8.20) AppleWebKit/605.1.15 (KHTML, like Gecko)",
  "Mozilla/5.0 (Linux; Android 12; AFTKA) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.5993.90 Mobile Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 16_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
}
-- First octets of public allocations on several continents (so the geo lookup sees many countries).
local octets = {8, 24, 31, 41, 46, 62, 77, 81, 91, 103, 110, 122, 151, 177, 185, 190, 196, 200, 202, 212}
local zones = {"Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC", "America/Sao_Paulo", "Africa/Lagos"}

function init(args)
  events = tonumber(args[1] or "20")
  tag = args[2] or "r"
  account = args[3] or "bench"
  n = 0
  codes = {}
  accepted = 0
  rejected = 0
  math.randomseed(id * 7919 + events)
  local rate = tonumber(args[4] or "0")
  if rate > 0 then
    -- wrk asks for a delay before each request only if the script defines delay(), after init
    local interval, first, k = 1000 / rate, nil, 0
    delay = function()
      local t = now_ms()
      first = first or t
      k = k + 1
      return math.max(0, math.floor(first + k * interval - t))
    end
  end
end

local function batch(session, video, now)
  local parts = {}
  local start = now - 600000 - events * 1000
  parts[1] = string.format('{"id":"1","type":"view","ts":%d}', start)
  for i = 2, events do
    if i == 2 then
      parts[i] = string.format('{"id":"2","type":"first_frame","ts":%d,"startup_ms":%d}', start + 500, 300 + i)
    else
      parts[i] = string.format('{"id":"%d","type":"heartbeat","ts":%d,"watched_ms":1000,"position":%d.5}',
                               i, start + i * 1000, i)
    end
  end
  return string.format('{"account":"%s","player":"web","session":"%s","video":"%s","live":false,'
      .. '"context":{"tz":"%s","page":"https://www.example.com/watch/%s"},"events":[%s]}',
      account, session, video, zones[math.random(#zones)], video, table.concat(parts, ","))
end

function request()
  n = n + 1
  local session = string.format("%s-t%d-%09d", tag, id, n)
  local video = "video-" .. math.random(50)
  local ip = string.format("%d.%d.%d.%d", octets[math.random(#octets)], math.random(0, 255),
                           math.random(0, 255), math.random(1, 254))
  local headers = {["Content-Type"] = "text/plain", ["User-Agent"] = agents[math.random(#agents)],
                   ["X-Forwarded-For"] = ip}
  return wrk.format("POST", nil, headers, batch(session, video, os.time() * 1000))
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
  if status == 202 then
    local a = body:match('"accepted":(%d+)')
    local r = body:match('"rejected":(%d+)')
    accepted = accepted + tonumber(a or "0")
    rejected = rejected + tonumber(r or "0")
  end
end

function done(summary, latency, requests)
  local all_codes, total_accepted, total_rejected, sent = {}, 0, 0, 0
  for _, thread in ipairs(threads) do
    local c = thread:get("codes")
    for status, count in pairs(c) do
      all_codes[tostring(status)] = (all_codes[tostring(status)] or 0) + count
    end
    total_accepted = total_accepted + thread:get("accepted")
    total_rejected = total_rejected + thread:get("rejected")
    sent = sent + thread:get("n")
  end
  local parts = {}
  for status, count in pairs(all_codes) do
    table.insert(parts, string.format('"%s":%d', status, count))
  end
  local e = summary.errors
  io.write(string.format('RESULT {"requests":%d,"sent":%d,"duration_us":%d,"bytes":%d,"codes":{%s},'
      .. '"accepted":%d,"rejected":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
      summary.requests, sent, summary.duration, summary.bytes, table.concat(parts, ","), total_accepted,
      total_rejected, e.connect, e.read, e.write, e.status, e.timeout, latency.mean, latency:percentile(50),
      latency:percentile(90), latency:percentile(99), latency.max))
end
