-- wrk script: one request with a body and an auth header from the
-- environment (BODY, AUTHZ "Name: value", METHOD default PUT).
local name, value = os.getenv("AUTHZ"):match("^([^:]+):%s*(.*)$")
wrk.method = os.getenv("METHOD") or "PUT"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers[name] = value
