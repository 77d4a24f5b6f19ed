-- A file write with If-None-Match: * ("create only", RFC 9110 13.1.2):
-- p_if_match '!' writes the file only if nothing was at its path. The write
-- is made, and if it turns out to have replaced a file the statement is
-- aborted (AT412), which undoes it: no window between a check and the
-- write in which another writer's file could be overwritten.
CREATE FUNCTION ws_write_file(p_ws uuid, p_path text, p_content text, p_bin bytea, p_sha text,
                              p_size bigint, p_mode int, p_if_match text, p_max_items int)
RETURNS TABLE (item_id bigint, item_version bigint, created boolean, modified timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF p_if_match IS DISTINCT FROM '!' THEN
        RETURN QUERY SELECT * FROM ws_put_file(p_ws, p_path, p_content, p_bin, p_sha, p_size,
                                               p_mode, p_if_match, p_max_items);
        RETURN;
    END IF;
    SELECT * INTO r FROM ws_put_file(p_ws, p_path, p_content, p_bin, p_sha, p_size, p_mode,
                                     NULL, p_max_items);
    IF NOT r.created THEN
        RAISE EXCEPTION 'precondition: % exists', p_path USING ERRCODE = 'AT412';
    END IF;
    RETURN QUERY SELECT r.item_id, r.item_version, r.created, r.modified;
END $$;
