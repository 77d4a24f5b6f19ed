-- Terminals (issue 6): a shell with a PTY inside a session's sandbox. The
-- gateway records one when a client opens it; the session-manager that owns
-- the session spawns it through the sandbox's init and keeps its pid here, so
-- a restarted manager re-attaches to it (init's `attach`).
CREATE TABLE terminals (
    id           UUID PRIMARY KEY,
    session_uuid TEXT NOT NULL REFERENCES code_sessions (uuid) ON DELETE CASCADE,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status       TEXT NOT NULL DEFAULT 'opening'
                 CHECK (status IN ('opening', 'open', 'exited', 'closed')),
    pid          INT,            -- the shell, as the sandbox's init numbers it
    cols         INT NOT NULL DEFAULT 80 CHECK (cols BETWEEN 1 AND 1000),
    rows         INT NOT NULL DEFAULT 24 CHECK (rows BETWEEN 1 AND 1000),
    exit_code    INT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at    TIMESTAMPTZ
);
CREATE INDEX terminals_live ON terminals (session_uuid) WHERE status IN ('opening', 'open');
