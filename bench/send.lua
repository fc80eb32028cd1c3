-- wrk script: one send request per call, 1000 recipients, no client_ref
-- (each is a new message). Same body for wa_send and for proxy_pass.
-- With the argument "media" (wrk ... -- media): an image by media id, in
-- Meta's shape, with a caption: the type's object is checked and
-- forwarded as the caller's bytes.
function init(args)
    n = 0
    media = args[1] == "media"
end

function request()
    n = n + 1
    local to = "97252" .. string.format("%07d", n % 1000)
    if media then
        return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
            '{"to":"' .. to .. '","type":"image","image":{"id":"1037543291543636",'
            .. '"caption":"hello from the send bench"}}')
    end
    return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
        '{"to":"' .. to .. '","text":"hello from the send bench"}')
end

dofile("bench/result.lua")
