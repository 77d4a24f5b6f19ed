-- File sync (issue 7): what each row's file is known to hold on its
-- workspace's volume, so the sync-worker can tell, for any difference
-- between a row and its file, which side changed since they last agreed.
--   disk_sha256    content hash last written to or read from the volume
--                  (NULL: never known there, e.g. saved while no session ran)
--   disk_mtime_ns  the file's mtime then: a rescan skips hashing a file whose
--                  size and mtime still match
ALTER TABLE workspace_items ADD COLUMN disk_sha256 TEXT, ADD COLUMN disk_mtime_ns BIGINT;

-- A file the sandbox wrote (p_sha of p_size bytes, text in p_content or
-- binary in p_bin) becomes its row. The rule when both sides changed since
-- they last agreed (the row's sha256 is not its disk_sha256: a save not yet
-- on the volume) is last writer wins, by arrival here: the sandbox's bytes
-- arrive now, so they win, and the row's content is kept as a new file
-- "<path>.conflict-<UTC timestamp>" (returned in conflict_path; the caller
-- writes it to the volume). Nothing is lost either way.
-- result: 'same' (the row already holds these bytes), 'updated', 'created',
-- 'conflict'.
CREATE FUNCTION ws_sync_file(p_ws uuid, p_path text, p_content text, p_bin bytea, p_sha text,
                             p_size bigint, p_mode int, p_mtime_ns bigint, p_max_items int)
RETURNS TABLE (result text, item_version bigint, conflict_path text)
LANGUAGE plpgsql AS $$
DECLARE
    cur     workspace_items%ROWTYPE;
    existed boolean;
    cpath   text := NULL;
    v       bigint;
BEGIN
    SELECT * INTO cur FROM workspace_items WHERE workspace_id = p_ws AND path = p_path FOR UPDATE;
    existed := FOUND;
    IF existed AND cur.type = 'folder' THEN
        RAISE EXCEPTION 'conflict: % is a folder', p_path USING ERRCODE = 'AT409';
    END IF;
    IF existed AND cur.sha256 = p_sha THEN
        UPDATE workspace_items SET disk_sha256 = p_sha, disk_mtime_ns = p_mtime_ns,
                                   mode = p_mode
        WHERE id = cur.id AND (disk_sha256 IS DISTINCT FROM p_sha
                               OR disk_mtime_ns IS DISTINCT FROM p_mtime_ns OR mode <> p_mode);
        RETURN QUERY SELECT 'same'::text, cur.version, NULL::text;
        RETURN;
    END IF;
    IF existed AND cur.disk_sha256 IS DISTINCT FROM cur.sha256 THEN
        cpath := p_path || '.conflict-' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISS"Z"');
        PERFORM ws_put_file_unchecked(p_ws, cpath, cur.content, cur.content_bin, cur.sha256,
                                      cur.size, cur.mode, NULL, p_max_items + 1);
    END IF;
    SELECT f.item_version INTO v
    FROM ws_put_file_unchecked(p_ws, p_path, p_content, p_bin, p_sha, p_size, p_mode, NULL,
                               p_max_items) f;
    UPDATE workspace_items SET disk_sha256 = p_sha, disk_mtime_ns = p_mtime_ns
    WHERE workspace_id = p_ws AND path = p_path;
    UPDATE code_sessions SET last_activity = now(), last_activity_kind = 'files'
    WHERE workspace_id = p_ws AND status IN ('loading_files', 'ready')
      AND last_activity < now() - interval '5 seconds';
    RETURN QUERY SELECT CASE WHEN cpath IS NOT NULL THEN 'conflict'
                             WHEN existed THEN 'updated' ELSE 'created' END, v, cpath;
END $$;

-- A folder the sandbox made.
CREATE FUNCTION ws_sync_folder(p_ws uuid, p_path text, p_max_items int) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    t text;
    n bigint;
BEGIN
    SELECT type INTO t FROM workspace_items WHERE workspace_id = p_ws AND path = p_path;
    IF FOUND THEN
        RETURN CASE WHEN t = 'folder' THEN 'same' ELSE 'conflict' END;
    END IF;
    SELECT count(*) INTO n FROM workspace_items WHERE workspace_id = p_ws;
    IF n >= p_max_items THEN
        RAISE EXCEPTION 'full: the workspace holds % items (limit %)', n, p_max_items
            USING ERRCODE = 'AT507';
    END IF;
    INSERT INTO workspace_items (workspace_id, parent_id, name, path, type, size)
    VALUES (p_ws, ws_ensure_folders(p_ws, p_path), regexp_replace(p_path, '^.*/', ''), p_path,
            'folder', 0)
    ON CONFLICT (workspace_id, path) DO NOTHING;
    RETURN 'created';
END $$;

-- A path the sandbox removed (a file, or a folder with everything below).
-- A row saved through the API since it last agreed with the volume is kept
-- (an edit wins over a delete: the caller writes it back); the rest go.
-- Returns the paths kept.
CREATE FUNCTION ws_sync_delete(p_ws uuid, p_path text) RETURNS SETOF text
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH d AS (
        DELETE FROM workspace_items i
        WHERE i.workspace_id = p_ws AND (i.path = p_path OR starts_with(i.path, p_path || '/'))
          AND (i.type = 'folder' OR i.sha256 IS NOT DISTINCT FROM i.disk_sha256)
          AND NOT EXISTS (SELECT 1 FROM workspace_items k
                          WHERE k.workspace_id = p_ws AND k.type = 'file'
                            AND starts_with(k.path, i.path || '/')
                            AND k.sha256 IS DISTINCT FROM k.disk_sha256)
        RETURNING i.path)
    SELECT i.path FROM workspace_items i
    WHERE i.workspace_id = p_ws AND i.type = 'file'
      AND (i.path = p_path OR starts_with(i.path, p_path || '/'))
      AND i.path NOT IN (SELECT path FROM d);
END $$;
