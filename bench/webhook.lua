-- wrk script: one webhook per request, each with a message id never used
-- before (thread number, start time and a counter), 1000 senders.
local threads = 0

function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end

function init(args)
    n = 0
    prefix = "wamid.bench." .. tid .. "." .. os.time() .. "." .. math.random(1, 1e9) .. "."
end

function request()
    n = n + 1
    local from = "97250" .. string.format("%07d", n % 1000)
    local body = '{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550000000","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Bench"},"wa_id":"' .. from .. '"}],"messages":[{"from":"' .. from .. '","id":"' .. prefix .. n .. '","timestamp":"1700000000","type":"text","text":{"body":"hello from the bench"}}]}}]}]}'
    return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
    io.write(string.format("RESULT requests=%d non2xx=%d errors=%d seconds=%.3f p50_ms=%.3f p99_ms=%.3f\n",
        summary.requests, summary.errors.status,
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
        summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
