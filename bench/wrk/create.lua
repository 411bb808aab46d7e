-- POST /api/v1/sessions as the bench merchant. Every token created is written to
-- <dir>/tokens-<thread>.txt, so that the POST /pay case can pay each link once.
-- Arguments after `--`: the directory, the API key.
dofile("bench/wrk/report.lua")

local threads = 0
function setup(thread)
   thread:set("id", threads)
   threads = threads + 1
end

local out
local n = 0
function init(args)
   out = assert(io.open(args[1] .. "/tokens-" .. id .. ".txt", "w"))
   out:setvbuf("line")
   wrk.method = "POST"
   wrk.headers["Authorization"] = "Bearer " .. args[2]
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   n = n + 1
   -- ttlSeconds 1200 (the most a link may live) so no link expires before it is paid.
   local body = string.format(
      '{"orderId":"bench_%d_%d","amount":1999,"currency":"USD","ttlSeconds":1200,' ..
      '"description":"2 tickets, Saturday, row F"}', id, n)
   return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
   if status == 201 then
      local token = body:match('"token":"(%x+)"')
      if token then out:write(token, "\n") end
   end
end
