-- wrk script: PUT to one of FILES paths in turn (bench-0.txt ...), so
-- concurrent writes hit different rows; BODY and AUTHZ from the environment.
local name, value = os.getenv("AUTHZ"):match("^([^:]+):%s*(.*)$")
local files = tonumber(os.getenv("FILES") or "64")
local n = 0
wrk.method = "PUT"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers[name] = value
function request()
    n = n + 1
    local path = wrk.path:gsub("bench%.txt$", "bench-" .. (n % files) .. ".txt")
    return wrk.format(nil, path)
end
