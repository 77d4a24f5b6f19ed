-- File sync (issue 7): what each row's file is known to hold on its
-- workspace's volume, so the sync-worker can tell, for any difference
-- between a row and its file, which side changed since they last agreed.
--   disk_sha256    content hash last written to or read from the volume
--                  (NULL: never known there, e.g. saved while no session ran)
--   disk_mtime_ns  the file's mtime then: a rescan skips hashing a file whose
--                  size and mtime still match
ALTER TABLE workspace_items ADD COLUMN disk_sha256 TEXT, ADD COLUMN disk_mtime_ns BIGINT;

-- True when a file has the path of one of p_path's folders (ws_ensure_folders
-- would refuse it): by the unique index, one probe per folder level.
CREATE FUNCTION ws_file_in_the_way(p_ws uuid, p_path text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM workspace_items i,
             (SELECT string_to_array(p_path, '/') AS parts) s,
             generate_series(1, coalesce(array_length(s.parts, 1), 1) - 1) n
        WHERE i.workspace_id = p_ws AND i.type = 'file'
          AND i.path = array_to_string(s.parts[1:n], '/'))
$$;

-- A file the sandbox wrote (p_sha of p_size bytes, text in p_content or
-- binary in p_bin) becomes its row. The rule when both sides changed since
-- they last agreed (the row's sha256 is not its disk_sha256: a save not yet
-- on the volume) is last writer wins, by arrival here: the sandbox's bytes
-- arrive now, so they win, and the row's content is kept as a new file
-- "<path>.conflict-<UTC timestamp>" (returned in conflict_path; the caller
-- writes it to the volume). Nothing is lost either way. p_room: how many
-- more items the workspace may hold (a new file needs one; the conflict copy
-- may take the workspace one over). The caller counts once per batch: a
-- count per file makes a burst of new files quadratic.
-- result: 'same' (the row already holds these bytes), 'updated', 'created',
-- 'conflict'.
CREATE FUNCTION ws_sync_one(p_ws uuid, p_path text, p_content text, p_bin bytea, p_sha text,
                            p_size bigint, p_mode int, p_mtime_ns bigint, p_room bigint)
RETURNS TABLE (result text, item_version bigint, conflict_path text, error text)
LANGUAGE plpgsql AS $$
DECLARE
    cur   workspace_items%ROWTYPE;
    cpath text := NULL;
BEGIN
    SELECT * INTO cur FROM workspace_items WHERE workspace_id = p_ws AND path = p_path FOR UPDATE;
    IF FOUND AND cur.type = 'folder' THEN
        -- the sandbox replaced a folder with a file: the folder's rows go,
        -- unless a file below was saved since it last agreed with the volume
        IF EXISTS (SELECT 1 FROM workspace_items k WHERE k.workspace_id = p_ws
                   AND k.type = 'file' AND starts_with(k.path, p_path || '/')
                   AND k.sha256 IS DISTINCT FROM k.disk_sha256) THEN
            RETURN QUERY SELECT 'error'::text, NULL::bigint, NULL::text,
                                'conflict: a folder of this path holds unsynced saves'::text;
            RETURN;
        END IF;
        DELETE FROM workspace_items i WHERE i.workspace_id = p_ws
          AND (i.path = p_path OR starts_with(i.path, p_path || '/'));
        FOUND := false;
    END IF;
    IF NOT FOUND THEN
        IF p_room <= 0 THEN
            RETURN QUERY SELECT 'error'::text, NULL::bigint, NULL::text,
                                'full: the workspace holds its limit of items'::text;
            RETURN;
        END IF;
        IF ws_file_in_the_way(p_ws, p_path) THEN
            RETURN QUERY SELECT 'error'::text, NULL::bigint, NULL::text,
                                'conflict: a file is where a folder of this path must be'::text;
            RETURN;
        END IF;
        INSERT INTO workspace_items (workspace_id, parent_id, name, path, type, content,
                                     content_bin, size, sha256, mode, disk_sha256, disk_mtime_ns)
        VALUES (p_ws, ws_ensure_folders(p_ws, p_path), regexp_replace(p_path, '^.*/', ''),
                p_path, 'file', p_content, p_bin, p_size, p_sha, p_mode, p_sha, p_mtime_ns);
        RETURN QUERY SELECT 'created'::text, 1::bigint, NULL::text, NULL::text;
        RETURN;
    END IF;
    IF cur.sha256 = p_sha THEN
        UPDATE workspace_items SET disk_sha256 = p_sha, disk_mtime_ns = p_mtime_ns, mode = p_mode
        WHERE id = cur.id AND (disk_sha256 IS DISTINCT FROM p_sha
                               OR disk_mtime_ns IS DISTINCT FROM p_mtime_ns OR mode <> p_mode);
        RETURN QUERY SELECT 'same'::text, cur.version, NULL::text, NULL::text;
        RETURN;
    END IF;
    IF cur.disk_sha256 IS DISTINCT FROM cur.sha256 THEN
        cpath := p_path || '.conflict-' ||
                 to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISS"Z"');
        INSERT INTO workspace_items (workspace_id, parent_id, name, path, type, content,
                                     content_bin, size, sha256, mode)
        VALUES (p_ws, cur.parent_id, regexp_replace(cpath, '^.*/', ''), cpath, 'file',
                cur.content, cur.content_bin, cur.size, cur.sha256, cur.mode)
        ON CONFLICT (workspace_id, path) DO UPDATE
        SET content = EXCLUDED.content, content_bin = EXCLUDED.content_bin,
            size = EXCLUDED.size, sha256 = EXCLUDED.sha256, version = workspace_items.version + 1,
            updated_at = now(), disk_sha256 = NULL;
    END IF;
    UPDATE workspace_items
    SET content = p_content, content_bin = p_bin, sha256 = p_sha, size = p_size, mode = p_mode,
        version = version + 1, updated_at = now(), disk_sha256 = p_sha, disk_mtime_ns = p_mtime_ns
    WHERE id = cur.id;
    RETURN QUERY SELECT CASE WHEN cpath IS NULL THEN 'updated' ELSE 'conflict' END,
                        cur.version + 1, cpath, NULL::text;
END $$;

-- A batch of the above: p_items is a JSON array of {path, content | b64
-- (standard base64 of binary bytes), sha, size, mode, mtime}. An item that
-- cannot be taken (the workspace is full, a folder is in the way) is
-- answered 'error' with the reason; the others go on (no exception blocks:
-- a subtransaction per item overflows PostgreSQL's snapshot cache past 64
-- and makes a big batch quadratic). Activity of the workspace's sessions is
-- recorded once.
CREATE FUNCTION ws_sync_files(p_ws uuid, p_items json, p_max_items int)
RETURNS TABLE (path text, result text, item_version bigint, conflict_path text, error text)
LANGUAGE plpgsql AS $$
DECLARE
    it   record;
    r    record;
    room bigint;
BEGIN
    SELECT p_max_items - count(*) INTO room FROM workspace_items i WHERE i.workspace_id = p_ws;
    FOR it IN SELECT * FROM json_to_recordset(p_items)
              AS x(path text, content text, b64 text, sha text, size bigint, mode int,
                   mtime bigint) LOOP
        SELECT * INTO r FROM ws_sync_one(p_ws, it.path, it.content, decode(it.b64, 'base64'),
                                         it.sha, it.size, it.mode, it.mtime, room);
        IF r.result IN ('created', 'conflict') THEN
            room := room - 1;
        END IF;
        RETURN QUERY SELECT it.path, r.result, r.item_version, r.conflict_path, r.error;
    END LOOP;
    UPDATE code_sessions SET last_activity = now(), last_activity_kind = 'files'
    WHERE workspace_id = p_ws AND status IN ('loading_files', 'ready')
      AND last_activity < now() - interval '5 seconds';
END $$;

-- Folders the sandbox made (p_paths: a JSON array of paths): result
-- 'created', 'same', or 'conflict' (a file of that path has a row).
CREATE FUNCTION ws_sync_folders(p_ws uuid, p_paths json, p_max_items int)
RETURNS TABLE (path text, result text)
LANGUAGE plpgsql AS $$
DECLARE
    p    text;
    t    text;
    room bigint;
BEGIN
    SELECT p_max_items - count(*) INTO room FROM workspace_items i WHERE i.workspace_id = p_ws;
    FOR p IN SELECT json_array_elements_text(p_paths) LOOP
        SELECT i.type INTO t FROM workspace_items i WHERE i.workspace_id = p_ws AND i.path = p;
        IF FOUND AND t = 'file' THEN
            -- the sandbox replaced a file with a folder: the file's row goes,
            -- unless it was saved since it last agreed with the volume
            DELETE FROM workspace_items i WHERE i.workspace_id = p_ws AND i.path = p
              AND i.sha256 IS NOT DISTINCT FROM i.disk_sha256;
            FOUND := NOT FOUND; -- still there: a conflict
        END IF;
        IF FOUND THEN
            RETURN QUERY SELECT p, CASE WHEN t = 'folder' THEN 'same' ELSE 'conflict' END;
        ELSIF room <= 0 THEN
            RETURN QUERY SELECT p, 'error'::text;
        ELSIF ws_file_in_the_way(p_ws, p) THEN
            RETURN QUERY SELECT p, 'conflict'::text;
        ELSE
            INSERT INTO workspace_items (workspace_id, parent_id, name, path, type, size)
            VALUES (p_ws, ws_ensure_folders(p_ws, p), regexp_replace(p, '^.*/', ''), p,
                    'folder', 0);
            room := room - 1;
            RETURN QUERY SELECT p, 'created'::text;
        END IF;
    END LOOP;
END $$;

-- Paths the sandbox removed (p_paths: a JSON array; each a file, or a folder
-- with everything below). A row saved through the API since it last agreed
-- with the volume is kept (an edit wins over a delete: the caller writes it
-- back); the rest go. Returns the paths kept and the paths removed.
CREATE FUNCTION ws_sync_deletes(p_ws uuid, p_paths json)
RETURNS TABLE (path text, kept boolean)
LANGUAGE plpgsql AS $$
DECLARE
    p text;
    t text;
BEGIN
    FOR p IN SELECT json_array_elements_text(p_paths) LOOP
        SELECT i.type INTO t FROM workspace_items i WHERE i.workspace_id = p_ws AND i.path = p;
        CONTINUE WHEN NOT FOUND;
        IF t = 'file' THEN
            DELETE FROM workspace_items i WHERE i.workspace_id = p_ws AND i.path = p
              AND i.sha256 IS NOT DISTINCT FROM i.disk_sha256;
            RETURN QUERY SELECT p, NOT FOUND;
            CONTINUE;
        END IF;
        -- a folder: what agrees with the volume goes, folders holding a
        -- newer save stay (deleting one would cascade to its files)
        RETURN QUERY
        WITH d AS (
            DELETE FROM workspace_items i
            WHERE i.workspace_id = p_ws AND (i.path = p OR starts_with(i.path, p || '/'))
              AND (i.type = 'folder' OR i.sha256 IS NOT DISTINCT FROM i.disk_sha256)
              AND NOT EXISTS (SELECT 1 FROM workspace_items k
                              WHERE k.workspace_id = p_ws AND k.type = 'file'
                                AND starts_with(k.path, i.path || '/')
                                AND k.sha256 IS DISTINCT FROM k.disk_sha256)
            RETURNING i.path)
        SELECT i.path, true FROM workspace_items i
        WHERE i.workspace_id = p_ws AND i.type = 'file'
          AND (i.path = p OR starts_with(i.path, p || '/'))
          AND i.path NOT IN (SELECT d.path FROM d)
        UNION ALL SELECT p, false WHERE EXISTS (SELECT 1 FROM d WHERE d.path = p);
    END LOOP;
END $$;
