-- POST bodies from BENCH_BODIES (one per line), each thread cycling through its own slice.
-- With BENCH_CONSUME=1 each body is sent once (refresh tokens rotate): a thread that runs out
-- sends its last body again, which the server refuses, and the refusals show as errors.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local bodies = {}
local next_body = 1
local consume = os.getenv("BENCH_CONSUME") == "1"

function init(args)
   local all = {}
   for line in io.lines(os.getenv("BENCH_BODIES")) do
      table.insert(all, line)
      if (#all - 1) % nthreads == id then
         table.insert(bodies, line)
      end
   end
   -- Fewer bodies than threads (one client_credentials body): every thread sends them all.
   if #bodies == 0 then
      bodies = all
   end
end

function request()
   local body = bodies[next_body]
   if next_body < #bodies then
      next_body = next_body + 1
   elseif not consume then
      next_body = 1
   end
   return wrk.format(nil, nil, nil, body)
end
