-- Shared by every case: one machine-readable line when wrk is done, read by bench/run.
-- Latencies are microseconds, as wrk keeps them.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d non2xx=%d " ..
      "connect=%d read=%d write=%d timeout=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
