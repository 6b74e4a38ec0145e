-- `buildplane events stats --clickhouse`: per target and cache scope, builds vs fresh and the cache hit ratio.
SELECT
    Target                                              AS target,
    CacheScope                                          AS cache_scope,
    uniqExact(RunId)                                    AS runs,
    countIf(TaskResult = 'success')                     AS builds,
    countIf(TaskResult = 'skip')                        AS fresh,
    countIf(TaskResult IN ('failure', 'timeout'))       AS failed,
    sumIf(CachedSteps, TaskResult = 'success')          AS cached_steps,
    sumIf(TotalSteps, TaskResult = 'success')           AS total_steps
FROM {database}.{table}
WHERE EventName = 'step.finished' AND Step = 'build' AND Timestamp >= fromUnixTimestamp64Nano({since_ns})
GROUP BY target, cache_scope
ORDER BY target, cache_scope
FORMAT JSON
