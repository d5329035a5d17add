-- `RunQueue::runs`: org $1's runs that the filter takes, in run id order after the cursor
-- $4 ('' for the first page: run ids are never empty), at most $5 rows. The filter is
-- lobu-core's `RunFilter::matches` said in SQL: agent $2 NULL (any) or equal, and statuses
-- $3 empty (any) or holding the run's status (stored in `RunStatus::as_str`'s spelling, the
-- one the record is parsed from). Read by the primary key in id order from the cursor.
SELECT {record}
  FROM {s}.runs r
 WHERE r.id > $4
   AND r.org = $1
   AND ($2::text IS NULL OR r.agent = $2)
   AND (cardinality($3::text[]) = 0 OR r.status = ANY ($3::text[]))
 ORDER BY r.id
 LIMIT $5
