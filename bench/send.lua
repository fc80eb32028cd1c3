-- wrk script: one send request per call, 1000 recipients, no client_ref
-- (each is a new message). Same body for wa_send and for proxy_pass.
function init(args)
    n = 0
end

function request()
    n = n + 1
    local to = "97252" .. string.format("%07d", n % 1000)
    return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
        '{"to":"' .. to .. '","text":"hello from the send bench"}')
end

dofile("bench/result.lua")
