-- Direct Build Plane Events table (FRACTALOPS_BUILD_EVENTS_ENABLED=true): one row per event.
-- {database} and {table} come from FRACTALOPS_CLICKHOUSE_DATABASE and FRACTALOPS_BUILD_EVENTS_TABLE.
CREATE TABLE IF NOT EXISTS {database}.{table}
(
    Timestamp      DateTime64(9, 'UTC'),
    EventName      LowCardinality(String),   -- run.started | run.finished | step.started | step.finished
    ServiceName    LowCardinality(String),
    Severity       LowCardinality(String),
    Pipeline       LowCardinality(String),   -- cicd.pipeline.name (mode)
    RunId          String,                   -- cicd.pipeline.run.id
    TaskName       String,                   -- cicd.pipeline.task.name, e.g. "build runtime"
    TaskType       LowCardinality(String),   -- build | deploy | test
    TaskResult     LowCardinality(String),   -- success | failure | skip | timeout | cancellation
    PipelineResult LowCardinality(String),   -- on run.finished
    Step           LowCardinality(String),   -- build | release | smoke | handback
    Target         LowCardinality(String),
    CacheScope     LowCardinality(String),   -- mode/target, e.g. dev/runtime
    CachedSteps    UInt32,
    TotalSteps     UInt32,
    ImageDigest    String,
    DurationMs     UInt64,
    Reason         String,
    Revision       String,                   -- vcs.ref.head.revision
    Attributes     Map(String, String)       -- every attribute of the event
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(Timestamp)
ORDER BY (Pipeline, Target, Timestamp)
TTL toDateTime(Timestamp) + INTERVAL 180 DAY
