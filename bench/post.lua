-- wrk script: POST /v1/messages with a bearer token and a unique client_msg_id per request.
-- Token and recipient come from the environment (BENCH_TOKEN, BENCH_TO).
local counter = 0
local thread_id = 0
local token = os.getenv("BENCH_TOKEN") or ""
local to = os.getenv("BENCH_TO") or "bench-r"

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function request()
  counter = counter + 1
  local body = '{"to":"' .. to .. '","client_msg_id":"w' .. tid .. '-' .. counter ..
               '","body":{"text":"' .. string.rep("x", 64) .. '"}}'
  return wrk.format("POST", "/v1/messages",
                    {["Authorization"] = "Bearer " .. token,
                     ["Content-Type"] = "application/json"}, body)
end
