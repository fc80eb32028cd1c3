-- wrk done(): one line bench/run.pl parses
function done(summary, latency, requests)
    io.write(string.format("RESULT requests=%d non2xx=%d errors=%d seconds=%.3f p50_ms=%.3f p99_ms=%.3f\n",
        summary.requests, summary.errors.status,
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
        summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
