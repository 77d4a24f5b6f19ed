-- Atelier records: the tables every process shares (ARCHITECTURE.md, "Records").
-- Applied once, in a transaction, by at_db_migrate under an advisory lock.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT NOT NULL,
    email         TEXT NOT NULL,
    password_hash TEXT,                 -- bcrypt $2b$; NULL for users made by the service API
    external_id   TEXT,                 -- the Client API's "user_id" string
    is_admin      BOOLEAN NOT NULL DEFAULT false,
    is_active     BOOLEAN NOT NULL DEFAULT true,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_external_id_key ON users (external_id) WHERE external_id IS NOT NULL;

CREATE TABLE api_keys (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL DEFAULT '',
    key_hash     TEXT NOT NULL UNIQUE,  -- sha256 hex of the key; the key itself is never stored
    prefix       TEXT NOT NULL DEFAULT '',
    is_admin     BOOLEAN NOT NULL DEFAULT false,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE auth_tokens (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   TEXT NOT NULL UNIQUE,  -- sha256 hex of the token
    kind         TEXT NOT NULL DEFAULT 'bearer' CHECK (kind IN ('bearer', 'ws_ticket')),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX auth_tokens_user ON auth_tokens (user_id);
CREATE INDEX auth_tokens_expiry ON auth_tokens (expires_at);

-- A user's persistent file tree.
CREATE TABLE workspaces (
    id         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);

-- Compute attached to one workspace.
CREATE TABLE code_sessions (
    id             BIGSERIAL PRIMARY KEY,
    uuid           TEXT NOT NULL UNIQUE CHECK (uuid ~ '^[0-9a-f-]{8,36}$'),
    user_id        BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    workspace_id   UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name           TEXT NOT NULL DEFAULT '',
    language       TEXT NOT NULL DEFAULT 'python',
    code           TEXT,                -- legacy field of the seed schema
    is_active      BOOLEAN NOT NULL DEFAULT true,
    status         TEXT NOT NULL DEFAULT 'initializing'
                   CHECK (status IN ('initializing', 'loading_files', 'ready', 'sleeping',
                                     'waking', 'error', 'terminating', 'terminated')),
    status_message TEXT,
    tier           TEXT NOT NULL DEFAULT 'standard',
    replicas       INT NOT NULL DEFAULT 1 CHECK (replicas >= 0),
    cpu_millis     INT,
    memory_mb      INT,
    owner_instance TEXT,                -- session-manager instance running it
    last_activity  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    terminated_at  TIMESTAMPTZ
);
CREATE INDEX code_sessions_user ON code_sessions (user_id, created_at DESC);
CREATE INDEX code_sessions_workspace ON code_sessions (workspace_id);
CREATE INDEX code_sessions_live ON code_sessions (status, last_activity)
    WHERE status NOT IN ('terminated');

CREATE TABLE workspace_items (
    id           BIGSERIAL PRIMARY KEY,
    workspace_id UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    parent_id    BIGINT REFERENCES workspace_items (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    path         TEXT NOT NULL,         -- normalised, relative, '/'-separated
    type         TEXT NOT NULL CHECK (type IN ('file', 'folder')),
    content      TEXT,                  -- UTF-8 text files
    content_bin  BYTEA,                 -- binary files
    size         BIGINT NOT NULL DEFAULT 0,
    sha256       TEXT,
    version      BIGINT NOT NULL DEFAULT 1,
    mode         INT NOT NULL DEFAULT 420,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, path)
);
CREATE INDEX workspace_items_parent ON workspace_items (workspace_id, parent_id);

-- The durable twin of every queued job (ARCHITECTURE.md, "Queues").
CREATE TABLE jobs (
    id          UUID PRIMARY KEY,
    kind        TEXT NOT NULL,
    role        TEXT NOT NULL,
    session     TEXT,
    state       TEXT NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued', 'running', 'retrying', 'done', 'dead')),
    attempts    INT NOT NULL DEFAULT 0,
    owner       TEXT,                   -- instance that ran the last attempt
    args        JSONB,
    result      JSONB,
    error       TEXT,
    enqueued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at  TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX jobs_session ON jobs (session, enqueued_at DESC) WHERE session IS NOT NULL;
CREATE INDEX jobs_open ON jobs (state, enqueued_at) WHERE state NOT IN ('done', 'dead');

CREATE TABLE backups (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    session_uuid TEXT,
    workspace_id UUID REFERENCES workspaces (id) ON DELETE SET NULL,
    user_id      BIGINT REFERENCES users (id) ON DELETE SET NULL,
    store        TEXT NOT NULL CHECK (store IN ('local', 's3')),
    location     TEXT NOT NULL,
    format       TEXT NOT NULL DEFAULT 'zip' CHECK (format IN ('zip', 'tar')),
    size_bytes   BIGINT,
    file_count   INT,
    sha256       TEXT,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'complete', 'failed', 'expired')),
    error        TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ
);
CREATE INDEX backups_session ON backups (session_uuid);
CREATE INDEX backups_user ON backups (user_id, created_at DESC);

CREATE TABLE chat_messages (
    id           BIGSERIAL PRIMARY KEY,
    session_uuid TEXT NOT NULL REFERENCES code_sessions (uuid) ON DELETE CASCADE,
    user_id      BIGINT REFERENCES users (id) ON DELETE SET NULL,
    role         TEXT NOT NULL DEFAULT 'user',
    message      TEXT NOT NULL,
    job_id       UUID,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX chat_messages_session ON chat_messages (session_uuid, created_at);

CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor   TEXT NOT NULL DEFAULT '',
    user_id BIGINT,
    action  TEXT NOT NULL,
    target  TEXT,
    detail  JSONB,
    ip      TEXT
);
CREATE INDEX audit_log_target ON audit_log (target, at);
CREATE INDEX audit_log_user ON audit_log (user_id, at);
