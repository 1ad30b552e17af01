-- wrk script: POST the seed's payload to the path given as the first script argument.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local body_file = os.getenv("BENCH_BODY_FILE")
local f = assert(io.open(body_file, "r"))
wrk.body = f:read("*a")
f:close()
