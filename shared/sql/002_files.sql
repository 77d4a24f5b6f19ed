-- Workspace files: the two statements every writer of workspace_items shares
-- (gateway file API, uploads, and the sync-worker), so the folder hierarchy,
-- versions and preconditions are kept in one place. Errors are raised with
-- SQLSTATE class AT and a message "code: detail" the callers map to HTTP:
--   AT404 no such file, AT409 path conflict (a file where a folder must be,
--   or a folder where a file is written), AT412 If-Match failed, AT507 the
--   workspace holds too many items.

-- Create the folders above p_path that are missing; return the id of its
-- parent folder (NULL at the workspace root).
CREATE FUNCTION ws_ensure_folders(p_ws uuid, p_path text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    parts  text[] := string_to_array(p_path, '/');
    cur    text := '';
    parent bigint := NULL;
    fid    bigint;
    ftype  text;
BEGIN
    FOR i IN 1 .. coalesce(array_length(parts, 1), 0) - 1 LOOP
        cur := CASE WHEN cur = '' THEN parts[i] ELSE cur || '/' || parts[i] END;
        INSERT INTO workspace_items (workspace_id, parent_id, name, path, type, size)
        VALUES (p_ws, parent, parts[i], cur, 'folder', 0)
        ON CONFLICT (workspace_id, path) DO NOTHING;
        SELECT id, type INTO fid, ftype FROM workspace_items
        WHERE workspace_id = p_ws AND path = cur;
        IF ftype <> 'folder' THEN
            RAISE EXCEPTION 'conflict: % is a file', cur USING ERRCODE = 'AT409';
        END IF;
        parent := fid;
    END LOOP;
    RETURN parent;
END $$;

-- Create or replace one file. Exactly one of p_content (UTF-8 text) and
-- p_bin (binary) is non-NULL. p_if_match: NULL for no precondition, '*' for
-- "must exist", else the sha256 the current content must have. p_mode NULL
-- keeps the current mode (0644 for a new file).
CREATE FUNCTION ws_put_file(p_ws uuid, p_path text, p_content text, p_bin bytea, p_sha text,
                            p_size bigint, p_mode int, p_if_match text, p_max_items int)
RETURNS TABLE (item_id bigint, item_version bigint, created boolean, modified timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    cur    workspace_items%ROWTYPE;
    parent bigint;
    n      bigint;
BEGIN
    SELECT * INTO cur FROM workspace_items WHERE workspace_id = p_ws AND path = p_path FOR UPDATE;
    IF FOUND THEN
        IF cur.type <> 'file' THEN
            RAISE EXCEPTION 'conflict: % is a folder', p_path USING ERRCODE = 'AT409';
        END IF;
        IF p_if_match IS NOT NULL AND p_if_match <> '*' AND cur.sha256 IS DISTINCT FROM p_if_match THEN
            RAISE EXCEPTION 'precondition: % has changed (sha256 %)', p_path, cur.sha256
                USING ERRCODE = 'AT412';
        END IF;
        UPDATE workspace_items
        SET content = p_content, content_bin = p_bin, sha256 = p_sha, size = p_size,
            mode = coalesce(p_mode, mode), version = version + 1, updated_at = now()
        WHERE id = cur.id;
        RETURN QUERY SELECT cur.id, cur.version + 1, false, now();
        RETURN;
    END IF;
    IF p_if_match IS NOT NULL THEN
        RAISE EXCEPTION 'precondition: % does not exist', p_path USING ERRCODE = 'AT412';
    END IF;
    SELECT count(*) INTO n FROM workspace_items WHERE workspace_id = p_ws;
    IF n >= p_max_items THEN
        RAISE EXCEPTION 'full: the workspace holds % items (limit %)', n, p_max_items
            USING ERRCODE = 'AT507';
    END IF;
    parent := ws_ensure_folders(p_ws, p_path);
    INSERT INTO workspace_items (workspace_id, parent_id, name, path, type, content, content_bin,
                                 size, sha256, mode)
    VALUES (p_ws, parent, regexp_replace(p_path, '^.*/', ''), p_path, 'file', p_content, p_bin,
            p_size, p_sha, coalesce(p_mode, 420))
    RETURNING id INTO n;
    RETURN QUERY SELECT n, 1::bigint, true, now();
END $$;
