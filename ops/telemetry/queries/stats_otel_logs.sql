-- The same build stats over the Collector's `otel_logs` table (runner → OTLP → Collector → ClickHouse).
SELECT
    LogAttributes['buildplane.target']                                   AS target,
    LogAttributes['buildplane.cache.scope']                              AS cache_scope,
    uniqExact(LogAttributes['cicd.pipeline.run.id'])                     AS runs,
    countIf(LogAttributes['cicd.pipeline.task.run.result'] = 'success')  AS builds,
    countIf(LogAttributes['cicd.pipeline.task.run.result'] = 'skip')     AS fresh,
    sumIf(toUInt32OrZero(LogAttributes['buildplane.cache.cached_steps']),
          LogAttributes['cicd.pipeline.task.run.result'] = 'success')    AS cached_steps,
    sumIf(toUInt32OrZero(LogAttributes['buildplane.cache.total_steps']),
          LogAttributes['cicd.pipeline.task.run.result'] = 'success')    AS total_steps
FROM otel_logs
WHERE ServiceName = {service_name:String}
  AND LogAttributes['buildplane.step'] = 'build'
  AND EventName = 'step.finished'
GROUP BY target, cache_scope
ORDER BY target, cache_scope
