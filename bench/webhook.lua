-- wrk script: one webhook per request, each with a message id never used
-- before (run tag, thread, counter), 1000 senders.
--
--   wrk ... -s webhook.lua URL -- [tag=T] [delay=MS] [bodies=FILE] [media=1]
--
-- media=1: image messages (media ids the bench's mock looks up) instead of
-- text.
-- delay: pause each connection MS ms between requests (a paced load).
-- bodies: lines "SIGNATURE<TAB>BODY", pre-signed (Lua cannot HMAC fast);
-- thread k of n sends lines k, k+n, ... and cycles: ids repeat after the
-- file, and a repeat is stored once.
local threads = 0

function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
    thread:set("nthreads", 0)
end

function init(args)
    n = 0
    opt = {}
    for _, a in ipairs(args) do
        local k, v = a:match("^(%w+)=(.*)$")
        if k then opt[k] = v end
    end
    tag = opt.tag or (os.time() .. "." .. math.random(1, 1e9))
    prefix = "wamid.bench." .. tag .. "." .. tid .. "."
    pause = tonumber(opt.delay or "0")
    media = opt.media == "1"
    signed = nil
    if opt.bodies then
        signed = {}
        local i = 0
        for line in io.lines(opt.bodies) do
            i = i + 1
            -- two threads: odd lines to one, even to the other
            if i % 2 == tid % 2 then
                local sig, body = line:match("^([^\t]+)\t(.*)$")
                signed[#signed + 1] = { sig, body }
            end
        end
    end
end

function delay()
    return pause
end

function request()
    n = n + 1
    if signed then
        local s = signed[(n - 1) % #signed + 1]
        return wrk.format("POST", nil, {["Content-Type"] = "application/json",
            ["X-Hub-Signature-256"] = "sha256=" .. s[1]}, s[2])
    end
    local from = "97250" .. string.format("%07d", n % 1000)
    local content = '"type":"text","text":{"body":"hello from the bench"}'
    if media then
        content = '"type":"image","image":{"id":"bench-media-' .. tag .. '-' .. tid .. '-' .. n .. '","mime_type":"image/jpeg","sha256":"bench"}'
    end
    local body = '{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550000000","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Bench"},"wa_id":"' .. from .. '"}],"messages":[{"from":"' .. from .. '","id":"' .. prefix .. n .. '","timestamp":"1700000000",' .. content .. '}]}}]}]}'
    return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

-- prints the RESULT line bench/run.pl reads
dofile("bench/result.lua")
