-- A finer histogram of file names. The planner estimates `original_filename ILIKE '%word%'`
-- from the histogram's entries: with the default 100 entries, a word that happens to occur in
-- one entry is estimated at 1 % of all files. At ten million files that made "the newest
-- 10,001 matches" look cheapest by walking created_at backwards, and a word in 3,000 files
-- then walked all ten million rows (a 5 s search timeout). 1,000 entries put the same
-- misfortune at 0.1 %, where the index scan of the matches is chosen. ANALYZE samples 300,000
-- rows instead of 30,000 (6 s at ten million files on a test machine).
ALTER TABLE file_cache ALTER COLUMN original_filename SET STATISTICS 1000;
-- The finer histogram now, not at the next auto-analyze (after ~10 % of the rows change).
ANALYZE file_cache (original_filename);
