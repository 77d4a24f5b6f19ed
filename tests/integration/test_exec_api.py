"""POST /api/sessions/{uuid}/exec through the gateway: validation,
ownership, the audit and jobs rows, and the answer coming from the job's
reply (here the session never becomes ready, so the session-manager
refuses and the answer is 409 with the reason; test_runtime.py runs real
commands in real sandboxes)."""


def test_exec_validates_checks_owner_and_answers_from_the_reply(stack):
    stack.start("gateway")
    stack.start("session-manager")
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    s = stack.post("/api/sessions", json={"name": "x"}, headers=ha).json()
    url = "/api/sessions/%s/exec" % s["uuid"]
    for body, want in (({}, 422), ({"command": ""}, 422), ({"command": 1}, 422),
                       ({"command": "true", "timeout_s": 0}, 422),
                       ({"command": "true", "timeout_s": 601}, 422),
                       ({"command": "true", "stdin": 5}, 422),
                       ({"command": "true", "shell": "sh"}, 422)):
        r = stack.post(url, json=body, headers=ha)
        assert r.status_code == want, (body, r.text)
    assert stack.post(url, data=b"{", headers=ha).status_code == 400
    assert stack.post(url, json={"command": "true"}).status_code == 401
    assert stack.post(url, json={"command": "true"}, headers=hb).status_code == 404
    assert not stack.query("SELECT 1 FROM jobs WHERE kind = 'exec'")
    r = stack.post(url, json={"command": "echo hi", "timeout_s": 5}, headers=ha, timeout=30)
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["detail"] and body["job_id"]
    row = stack.query("SELECT kind, role, session, args->>'command', (args->>'timeout_s')::int "
                      "FROM jobs WHERE id = %s", body["job_id"])
    assert row == [("exec", "session", s["uuid"], "echo hi", 5)]
    audit = stack.audit("session.exec")
    assert len(audit) == 1 and audit[0]["target"] == s["uuid"]
    assert audit[0]["actor"] == "user:%d" % a["id"]
