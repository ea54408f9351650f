-- diff
SELECT s.*, c.dest_id AS __retl_dest_id, c.key_hash AS __retl_known, k.copies AS __retl_copies FROM (SELECT q.*, CASE WHEN CAST("EMAIL" AS VARCHAR) IS NULL OR TRIM(CAST("EMAIL" AS VARCHAR)) = '' THEN NULL ELSE LOWER(TRIM(CAST("EMAIL" AS VARCHAR))) END AS __retl_key_text, SUBSTRING(MD5(CASE WHEN CAST("EMAIL" AS VARCHAR) IS NULL OR TRIM(CAST("EMAIL" AS VARCHAR)) = '' THEN NULL ELSE LOWER(TRIM(CAST("EMAIL" AS VARCHAR))) END), 1, 16) AS __retl_key_hash, SUBSTRING(MD5(COALESCE(CAST(LENGTH(CAST("EMAIL" AS VARCHAR)) AS VARCHAR) || ':' || CAST("EMAIL" AS VARCHAR), 'n') || '|' || COALESCE(CAST(LENGTH(CAST("NAME" AS VARCHAR)) AS VARCHAR) || ':' || CAST("NAME" AS VARCHAR), 'n')), 1, 16) AS __retl_row_hash FROM (
select * from crm.people
) AS q) AS s LEFT JOIN (SELECT key_hash, row_hash, dest_id FROM "OPS"."RETL_CK" WHERE sync_id = 's') AS c ON c.key_hash = s.__retl_key_hash LEFT JOIN (SELECT SUBSTRING(MD5(CASE WHEN CAST("EMAIL" AS VARCHAR) IS NULL OR TRIM(CAST("EMAIL" AS VARCHAR)) = '' THEN NULL ELSE LOWER(TRIM(CAST("EMAIL" AS VARCHAR))) END), 1, 16) AS key_hash, COUNT(*) AS copies FROM (
select * from crm.people
) AS q WHERE (CASE WHEN CAST("EMAIL" AS VARCHAR) IS NULL OR TRIM(CAST("EMAIL" AS VARCHAR)) = '' THEN NULL ELSE LOWER(TRIM(CAST("EMAIL" AS VARCHAR))) END) IS NOT NULL GROUP BY SUBSTRING(MD5(CASE WHEN CAST("EMAIL" AS VARCHAR) IS NULL OR TRIM(CAST("EMAIL" AS VARCHAR)) = '' THEN NULL ELSE LOWER(TRIM(CAST("EMAIL" AS VARCHAR))) END), 1, 16)) AS k ON k.key_hash = s.__retl_key_hash WHERE s.__retl_key_text IS NULL OR k.copies > 1 OR c.key_hash IS NULL OR c.row_hash <> s.__retl_row_hash OR c.dest_id = '__retl_pending__'

-- removed
SELECT c.key_hash AS __retl_key_hash, c.dest_id AS __retl_dest_id, CAST(NULL AS BIGINT) AS __retl_rows FROM (SELECT key_hash, row_hash, dest_id FROM "OPS"."RETL_CK" WHERE sync_id = 's') AS c WHERE NOT EXISTS(SELECT 1 FROM (
select * from crm.people
) AS q WHERE SUBSTRING(MD5(CASE WHEN CAST("EMAIL" AS VARCHAR) IS NULL OR TRIM(CAST("EMAIL" AS VARCHAR)) = '' THEN NULL ELSE LOWER(TRIM(CAST("EMAIL" AS VARCHAR))) END), 1, 16) = c.key_hash) UNION ALL SELECT NULL, NULL, COUNT(*) FROM (
select * from crm.people
) AS q

-- rebaseline
DELETE FROM "OPS"."RETL_CK" WHERE sync_id = 's#rebaseline';
INSERT INTO "OPS"."RETL_CK" (sync_id, key_hash, row_hash, dest_id) SELECT 's#rebaseline', h.key_hash, h.row_hash, c.dest_id FROM (SELECT SUBSTRING(MD5(CASE WHEN CAST("EMAIL" AS VARCHAR) IS NULL OR TRIM(CAST("EMAIL" AS VARCHAR)) = '' THEN NULL ELSE LOWER(TRIM(CAST("EMAIL" AS VARCHAR))) END), 1, 16) AS key_hash, MIN(SUBSTRING(MD5(COALESCE(CAST(LENGTH(CAST("EMAIL" AS VARCHAR)) AS VARCHAR) || ':' || CAST("EMAIL" AS VARCHAR), 'n') || '|' || COALESCE(CAST(LENGTH(CAST("NAME" AS VARCHAR)) AS VARCHAR) || ':' || CAST("NAME" AS VARCHAR), 'n')), 1, 16)) AS row_hash FROM (
select * from crm.people
) AS q WHERE (CASE WHEN CAST("EMAIL" AS VARCHAR) IS NULL OR TRIM(CAST("EMAIL" AS VARCHAR)) = '' THEN NULL ELSE LOWER(TRIM(CAST("EMAIL" AS VARCHAR))) END) IS NOT NULL GROUP BY SUBSTRING(MD5(CASE WHEN CAST("EMAIL" AS VARCHAR) IS NULL OR TRIM(CAST("EMAIL" AS VARCHAR)) = '' THEN NULL ELSE LOWER(TRIM(CAST("EMAIL" AS VARCHAR))) END), 1, 16) HAVING COUNT(*) = 1) AS h LEFT JOIN (SELECT key_hash, row_hash, dest_id FROM "OPS"."RETL_CK" WHERE sync_id = 's') AS c ON c.key_hash = h.key_hash;
DELETE FROM "OPS"."RETL_CK" WHERE sync_id = 's';
UPDATE "OPS"."RETL_CK" SET sync_id = 's' WHERE sync_id = 's#rebaseline'
