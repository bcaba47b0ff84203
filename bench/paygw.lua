-- wrk script for bench/run.sh: replays pre-signed requests.
--
--   wrk -t2 -c64 -d10s -s bench/paygw.lua http://127.0.0.1:PORT -- PREFIX EXPECT [repeat]
--
-- PREFIX.<n> (n = 1..threads) holds thread n's requests, written by
-- bench/paygw_bench.py: complete raw HTTP/1.1 requests separated by NUL
-- bytes.  Every request carries its own nonce, so a request is never sent
-- twice: when a thread runs out it stops (and the run is marked invalid)
-- instead of wrapping around into replayed nonces (401).
--
-- response() counts non-2xx answers and answers other than EXPECT (the
-- status the scenario should produce, e.g. 201 for creates; a mixed load
-- gives several, comma-separated: "201,200"), and keeps the
-- first few of each for the report.  done() prints one machine-readable
-- line, "BENCH {json-ish key=value ...}", that the driver parses.

local threads = {}
local counter = 0

function setup(thread)
    counter = counter + 1
    thread:set("tid", counter)
    table.insert(threads, thread)
end

local reqs, nreqs, idx = nil, 0, 0
local expect = { [200] = true }
local repeat_one = false
local fallback
-- per-thread results, read by done() through thread:get()
non2xx, unexpected, exhausted, loaded = 0, 0, 0, 0
samples = ""
local nsamples = 0

function init(args)
    local prefix = args[1]
    expect = {}
    for code in string.gmatch(args[2] or "200", "%d+") do
        expect[tonumber(code)] = true
    end
    repeat_one = (args[3] == "repeat")
    local f = assert(io.open(prefix .. "." .. tid, "rb"))
    local data = f:read("*a")
    f:close()
    reqs = {}
    local pos, n = 1, 0
    local len = #data
    while pos <= len do
        local e = string.find(data, "\0", pos, true)
        if e == nil then e = len + 1 end
        if e > pos then
            n = n + 1
            reqs[n] = string.sub(data, pos, e - 1)
        end
        pos = e + 1
    end
    data = nil
    nreqs = n
    loaded = n
    collectgarbage()
    -- sent only after this thread ran out (it is about to stop)
    fallback = wrk.format("GET", "/healthz")
end

function request()
    if repeat_one then
        return reqs[1]
    end
    idx = idx + 1
    if idx > nreqs then
        exhausted = exhausted + 1
        if exhausted == 1 then
            wrk.thread:stop()
        end
        return fallback
    end
    return reqs[idx]
end

local function sample(status, body)
    if nsamples < 3 then
        nsamples = nsamples + 1
        body = string.gsub(string.sub(body or "", 1, 300), "[%c|]", " ")
        samples = samples .. status .. " " .. body .. "|"
    end
end

function response(status, headers, body)
    if status < 200 or status > 299 then
        non2xx = non2xx + 1
        sample(status, body)
    elseif not expect[status] then
        unexpected = unexpected + 1
        sample(status, body)
    end
end

function done(summary, latency, requests)
    local t = { non2xx = 0, unexpected = 0, exhausted = 0, loaded = 0 }
    local s = ""
    for _, thread in ipairs(threads) do
        for k, _ in pairs(t) do
            t[k] = t[k] + (thread:get(k) or 0)
        end
        s = s .. (thread:get("samples") or "")
    end
    local e = summary.errors
    io.write(string.format(
        "BENCH requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d " ..
        "p99_us=%d max_us=%d mean_us=%.1f err_connect=%d err_read=%d " ..
        "err_write=%d err_status=%d err_timeout=%d non2xx=%d " ..
        "unexpected=%d exhausted=%d loaded=%d\n",
        summary.requests, summary.duration, summary.bytes,
        latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency.max, latency.mean,
        e.connect, e.read, e.write, e.status, e.timeout,
        t.non2xx, t.unexpected, t.exhausted, t.loaded))
    io.write("BENCHSAMPLES " .. s .. "\n")
end
