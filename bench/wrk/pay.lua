-- POST /pay/<token> with an approved test card, each token once: the tokens the create
-- case wrote, split between wrk's threads. A thread stops when its share is used up, so
-- no link is ever paid twice and the case measures only approvals.
-- Arguments after `--`: the file of tokens, the number of wrk threads.
dofile("bench/wrk/report.lua")

local threads = 0
function setup(thread)
   thread:set("id", threads)
   threads = threads + 1
end

local tokens = {}
local next_token = 1
local stopped = false

function init(args)
   local nthreads = tonumber(args[2])
   local i = 0
   for line in io.lines(args[1]) do
      if i % nthreads == id then tokens[#tokens + 1] = line end
      i = i + 1
   end
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
   wrk.body = "cardholderName=Ada+Lovelace&cardNumber=4242+4242+4242+4242&expiry=12%2F39&cvc=123"
end

function request()
   local token = tokens[next_token]
   if token == nil then
      -- Used up: stop this thread. wrk still wants a request; a health check pays nothing.
      if not stopped then
         stopped = true
         wrk.thread:stop()
      end
      return wrk.format("GET", "/healthz", {}, "")
   end
   next_token = next_token + 1
   return wrk.format(nil, "/pay/" .. token)
end
