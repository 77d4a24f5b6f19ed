-- The local runtime's records (issue 5): who owns a session, what it uses,
-- when it was last active and why, and a disk check on every file write.

-- owner_instance holds a session while owner_lease_until is in the future;
-- the owner renews it, another session-manager adopts the session once it
-- has expired (its owner died). last_cpu_ns is the cgroup CPU time of the
-- previous look, so CPU use between two looks counts as activity.
ALTER TABLE code_sessions
    ADD COLUMN owner_lease_until  TIMESTAMPTZ,
    ADD COLUMN last_activity_kind TEXT NOT NULL DEFAULT 'create',
    ADD COLUMN slept_at           TIMESTAMPTZ,
    ADD COLUMN last_cpu_ns        BIGINT,
    ADD COLUMN memory_bytes       BIGINT,
    ADD COLUMN oom_kills          INT NOT NULL DEFAULT 0,
    ADD COLUMN disk_used_bytes    BIGINT,
    ADD COLUMN disk_total_bytes   BIGINT;

CREATE INDEX code_sessions_owner ON code_sessions (owner_instance)
    WHERE status <> 'terminated';

-- The volume of a workspace, relative to WORKSPACE_BASE_PATH: a user's
-- default workspace ("workspace") at {user_id}/, as workspace-s3-git.md lays
-- it out; any other beside it at {user_id}-{workspace_id}/ (never inside the
-- default one's mount). The session-manager names volumes only through this.
CREATE FUNCTION ws_volume_name(p_ws uuid) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN name = 'workspace' THEN user_id::text
                ELSE user_id::text || '-' || id::text END
    FROM workspaces WHERE id = p_ws
$$;

-- The bytes a write may still add to the workspace: the least free space of
-- the volumes of its running sessions, NULL when none was measured (no limit
-- here). ext4 keeps 2% of a volume, at most 16 MiB, for its own metadata and
-- answers ENOSPC before statvfs shows 0 free; a volume within that reserve
-- plus 1 MiB is full.
CREATE FUNCTION ws_disk_free(p_ws uuid) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT min(disk_total_bytes - disk_used_bytes
               - least(disk_total_bytes / 50, 16777216) - 1048576) FROM code_sessions
    WHERE workspace_id = p_ws AND status IN ('loading_files', 'ready')
      AND disk_total_bytes IS NOT NULL AND disk_used_bytes IS NOT NULL
$$;

-- Every file write first checks that the volume it will land on has room:
-- a write that grows the file past the free space fails with AT507 (the API
-- answers 507), one that does not grow it (or shrinks it) always passes, so
-- a user with a full disk can still save smaller versions.
ALTER FUNCTION ws_put_file(uuid, text, text, bytea, text, bigint, int, text, int)
    RENAME TO ws_put_file_unchecked;

CREATE FUNCTION ws_put_file(p_ws uuid, p_path text, p_content text, p_bin bytea, p_sha text,
                            p_size bigint, p_mode int, p_if_match text, p_max_items int)
RETURNS TABLE (item_id bigint, item_version bigint, created boolean, modified timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    free bigint := ws_disk_free(p_ws);
    old  bigint;
BEGIN
    IF free IS NOT NULL THEN
        SELECT size INTO old FROM workspace_items WHERE workspace_id = p_ws AND path = p_path;
        IF p_size - coalesce(old, 0) > free THEN
            RAISE EXCEPTION 'disk: no space left on the workspace volume for % (% bytes free)',
                p_path, greatest(free, 0) USING ERRCODE = 'AT507';
        END IF;
    END IF;
    -- a save is activity of the workspace's running sessions (at most one
    -- row update per session every 5 s: a burst of saves stays cheap)
    UPDATE code_sessions SET last_activity = now(), last_activity_kind = 'api'
    WHERE workspace_id = p_ws AND status IN ('loading_files', 'ready')
      AND last_activity < now() - interval '5 seconds';
    RETURN QUERY SELECT * FROM ws_put_file_unchecked(p_ws, p_path, p_content, p_bin, p_sha,
                                                     p_size, p_mode, p_if_match, p_max_items);
END $$;
