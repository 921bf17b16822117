-- Event API batches: BENCH_BATCH events per request, each from BENCH_EVENT (JSON with one %s
-- for the event id), with ids unique per run (BENCH_RUN), thread and request.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local template = os.getenv("BENCH_EVENT")
local batch = tonumber(os.getenv("BENCH_BATCH"))
local run = os.getenv("BENCH_RUN")
local sent = 0

function request()
   sent = sent + 1
   local events = {}
   for k = 1, batch do
      events[k] = string.format(template, string.format("%s-t%d-%d-%d", run, id, sent, k))
   end
   return wrk.format(nil, nil, nil, '{"events": [' .. table.concat(events, ",") .. "]}")
end
