-- Shared by the benchmark's wrk scripts: POST with the headers from the environment, and one
-- machine-readable result line when wrk is done.
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/x-www-form-urlencoded"
local auth = os.getenv("BENCH_AUTHORIZATION")
if auth and auth ~= "" then
   wrk.headers["Authorization"] = auth
end

-- Each wrk thread gets an id (0 .. BENCH_THREADS - 1), so that threads take disjoint slices of
-- the bodies. wrk runs each thread's init() before the next thread's setup(): the number of
-- threads comes from the environment.
nthreads = tonumber(os.getenv("BENCH_THREADS"))
local counter = 0
local threads = {}

function setup(thread)
   thread:set("id", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

-- Answers by HTTP status, per thread (wrk's own summary only counts "non-2xx or 3xx").
statuses = {}

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local e = summary.errors
   local total = {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         total[status] = (total[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(total) do
      table.insert(parts, string.format('"%d": %d', status, n))
   end
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
      '"max_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
      '"statuses": {%s}}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      latency.max, e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ", ")))
end
