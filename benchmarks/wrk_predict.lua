-- wrk script for benchmarks/serve_load.py: one text per POST /v1/predict, cycling through a
-- file of JSON bodies (one per line, path in $WRK_BODIES) to $WRK_PATH (default /v1/predict);
-- prints one JSON summary line.
local bodies = {}
for line in io.lines(os.getenv("WRK_BODIES")) do bodies[#bodies + 1] = line end
local i = 0
local path = os.getenv("WRK_PATH") or "/v1/predict"
local headers = {["Content-Type"] = "application/json"}

request = function()
  i = i % #bodies + 1
  return wrk.format("POST", path, headers, bodies[i])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "socket_errors": %d, "non_2xx": %d, "duration_s": %.4f, ' ..
    '"p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f}\n',
    summary.requests, e.connect + e.read + e.write + e.timeout, e.status,
    summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(95) / 1e3,
    latency:percentile(99) / 1e3))
end
