-- `buildplane events stats --clickhouse`: p50/p95 duration per target and step (steps that did work or were fresh).
SELECT
    Target                                              AS target,
    Step                                                AS step,
    count()                                             AS count,
    quantileExactLow(0.5)(DurationMs)                   AS p50_ms,
    quantileExactLow(0.95)(DurationMs)                  AS p95_ms
FROM {database}.{table}
WHERE EventName = 'step.finished' AND Target != '' AND TaskResult IN ('success', 'skip', 'failure', 'timeout')
  AND Timestamp >= fromUnixTimestamp64Nano({since_ns})
GROUP BY target, step
ORDER BY target, step
FORMAT JSON
