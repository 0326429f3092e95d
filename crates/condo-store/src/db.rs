//! The SQLite database: schema migrations and one small repository per concern.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use condo_types::{FunctionConfig, FunctionName, Tags, Version};
use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("the function already exists")]
    AlreadyExists,
    #[error("the store lock was poisoned")]
    Poisoned,
}

/// Schema, in order; a database is at `PRAGMA user_version` = the number of steps applied.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE functions (
        name TEXT PRIMARY KEY,
        next_version INTEGER NOT NULL DEFAULT 1,
        reserved_concurrency INTEGER,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE function_versions (
        name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        version TEXT NOT NULL,
        config TEXT NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE async_invocations (
        id TEXT PRIMARY KEY,
        function TEXT NOT NULL,
        qualifier TEXT,
        tenant TEXT,
        payload BLOB NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX async_due ON async_invocations(next_attempt_ms);
    CREATE TABLE log_streams (
        log_group TEXT NOT NULL,
        log_stream TEXT NOT NULL,
        function TEXT NOT NULL,
        version TEXT NOT NULL,
        tenant_id TEXT,
        environment_id TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (log_group, log_stream)
    );
    CREATE TABLE log_events (
        id INTEGER PRIMARY KEY,
        log_group TEXT NOT NULL,
        log_stream TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        ingestion_ms INTEGER NOT NULL,
        message TEXT NOT NULL,
        request_id TEXT,
        tenant_id TEXT
    );
    CREATE INDEX log_events_stream ON log_events(log_group, log_stream, timestamp_ms);",
    "ALTER TABLE functions ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';",
    // Events name their stream by an integer id: two text columns per row, and in the index,
    // made every append cost several times what it must. Streams get an explicit id (a bare
    // rowid may change on VACUUM); events of a stream never recorded keep a stream row.
    "CREATE TABLE log_streams_v3 (
        id INTEGER PRIMARY KEY,
        log_group TEXT NOT NULL,
        log_stream TEXT NOT NULL,
        function TEXT NOT NULL,
        version TEXT NOT NULL,
        tenant_id TEXT,
        environment_id TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        UNIQUE (log_group, log_stream)
    );
    INSERT INTO log_streams_v3 (log_group, log_stream, function, version, tenant_id, environment_id, created_ms)
        SELECT log_group, log_stream, function, version, tenant_id, environment_id, created_ms FROM log_streams;
    INSERT OR IGNORE INTO log_streams_v3 (log_group, log_stream, function, version, tenant_id, environment_id, created_ms)
        SELECT log_group, log_stream, '', '', MAX(tenant_id), '', MIN(timestamp_ms) FROM log_events
        GROUP BY log_group, log_stream;
    CREATE TABLE log_events_v3 (
        id INTEGER PRIMARY KEY,
        stream_id INTEGER NOT NULL REFERENCES log_streams_v3(id),
        timestamp_ms INTEGER NOT NULL,
        ingestion_ms INTEGER NOT NULL,
        message TEXT NOT NULL,
        request_id TEXT,
        tenant_id TEXT
    );
    INSERT INTO log_events_v3 (id, stream_id, timestamp_ms, ingestion_ms, message, request_id, tenant_id)
        SELECT e.id, s.id, e.timestamp_ms, e.ingestion_ms, e.message, e.request_id, e.tenant_id
        FROM log_events e JOIN log_streams_v3 s ON s.log_group = e.log_group AND s.log_stream = e.log_stream;
    DROP TABLE log_events;
    DROP TABLE log_streams;
    ALTER TABLE log_streams_v3 RENAME TO log_streams;
    ALTER TABLE log_events_v3 RENAME TO log_events;
    CREATE INDEX log_events_stream ON log_events(stream_id, timestamp_ms);",
];

/// The database handle. One connection behind a mutex: SQLite serialises writers anyway, and
/// every statement here is short.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

/// One queued `Event` invocation, durable across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncInvocation {
    pub id: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub tenant: Option<String>,
    pub payload: Vec<u8>,
    pub attempts: u32,
    pub next_attempt_ms: i64,
}

/// One line of a log stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub log_group: String,
    pub log_stream: String,
    pub timestamp_ms: i64,
    pub message: String,
    pub request_id: Option<String>,
    pub tenant_id: Option<String>,
}

/// A log stream: one per execution environment, so one tenant at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStreamInfo {
    pub log_group: String,
    pub log_stream: String,
    pub function: String,
    pub version: String,
    pub tenant_id: Option<String>,
    pub environment_id: String,
    pub created_ms: i64,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tx = conn.transaction()?;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(applied) {
            tx.execute_batch(step)?;
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        tx.commit()?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        f(&mut conn)
    }

    // --- functions and versions ---

    /// Creates a function with its tags and `$LATEST` configuration.
    pub fn create_function(
        &self,
        latest: &FunctionConfig,
        tags: &Tags,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let tags = serde_json::to_string(tags).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.with(|c| {
            let tx = c.transaction()?;
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO functions (name, created_ms, tags) VALUES (?1, ?2, ?3)",
                params![latest.name.as_str(), now_ms, tags],
            )?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists);
            }
            put_version(&tx, latest)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Replaces the stored configuration of an existing version (only `$LATEST` changes).
    pub fn update_version(&self, config: &FunctionConfig) -> Result<(), StoreError> {
        self.with(|c| put_version(c, config))
    }

    /// Freezes `latest` as the next version number and returns it, unless the newest published
    /// version already has the same code and configuration (then that one is returned).
    pub fn publish_version(
        &self,
        latest: &FunctionConfig,
        same_as: impl Fn(&FunctionConfig) -> bool,
    ) -> Result<FunctionConfig, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let newest: Option<String> = tx
                .query_row(
                    "SELECT config FROM function_versions WHERE name = ?1 AND version != '$LATEST'
                     ORDER BY CAST(version AS INTEGER) DESC LIMIT 1",
                    params![latest.name.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(json) = newest {
                let existing = decode(&json)?;
                if same_as(&existing) {
                    return Ok(existing);
                }
            }
            let n: u32 = tx.query_row(
                "UPDATE functions SET next_version = next_version + 1 WHERE name = ?1 RETURNING next_version - 1",
                params![latest.name.as_str()],
                |r| r.get(0),
            )?;
            let mut published = latest.clone();
            published.version = Version::Published(n);
            put_version(&tx, &published)?;
            tx.commit()?;
            Ok(published)
        })
    }

    pub fn get_version(
        &self,
        name: &FunctionName,
        version: Version,
    ) -> Result<Option<FunctionConfig>, StoreError> {
        self.with(|c| {
            let json: Option<String> = c
                .query_row(
                    "SELECT config FROM function_versions WHERE name = ?1 AND version = ?2",
                    params![name.as_str(), version.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            json.map(|j| decode(&j)).transpose()
        })
    }

    /// `$LATEST` of every function, ordered by name, starting after `after`.
    pub fn list_functions(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FunctionConfig>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT config FROM function_versions WHERE version = '$LATEST' AND name > ?1
                 ORDER BY name LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after.unwrap_or(""), limit as i64], |r| {
                r.get::<_, String>(0)
            })?;
            rows.map(|r| decode(&r?)).collect()
        })
    }

    /// Every version of one function: `$LATEST` first, then published ones in order.
    pub fn list_versions(&self, name: &FunctionName) -> Result<Vec<FunctionConfig>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT config FROM function_versions WHERE name = ?1
                 ORDER BY version != '$LATEST', CAST(version AS INTEGER)",
            )?;
            let rows = stmt.query_map(params![name.as_str()], |r| r.get::<_, String>(0))?;
            rows.map(|r| decode(&r?)).collect()
        })
    }

    /// Deletes a whole function (`None`) or one published version. Returns whether it existed.
    pub fn delete(
        &self,
        name: &FunctionName,
        version: Option<Version>,
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = match version {
                None => c.execute(
                    "DELETE FROM functions WHERE name = ?1",
                    params![name.as_str()],
                )?,
                Some(v) => c.execute(
                    "DELETE FROM function_versions WHERE name = ?1 AND version = ?2",
                    params![name.as_str(), v.to_string()],
                )?,
            };
            Ok(n > 0)
        })
    }

    /// Every code id still referenced by some version (for garbage collection of the code store).
    pub fn referenced_code(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT config FROM function_versions")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut ids: Vec<String> = rows
                .map(|r| decode(&r?).map(|cfg| cfg.code_id))
                .collect::<Result<_, _>>()?;
            ids.sort();
            ids.dedup();
            Ok(ids)
        })
    }

    // --- tags ---

    /// A function's tags; `None` if the function does not exist.
    pub fn tags(&self, name: &FunctionName) -> Result<Option<Tags>, StoreError> {
        self.with(|c| {
            let raw: Option<String> = c
                .query_row(
                    "SELECT tags FROM functions WHERE name = ?1",
                    params![name.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            raw.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()
        })
    }

    /// Every function that has tags, with them (read at start-up for the settings tags carry).
    pub fn all_tags(&self) -> Result<Vec<(String, Tags)>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT name, tags FROM functions WHERE tags != '{}'")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (name, raw) = row?;
                let tags =
                    serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                out.push((name, tags));
            }
            Ok(out)
        })
    }

    /// Replaces a function's tags and, in the same transaction, its `$LATEST` configuration
    /// when a tag changed it. Returns whether the function existed.
    pub fn set_tags(
        &self,
        name: &FunctionName,
        tags: &Tags,
        latest: Option<&FunctionConfig>,
    ) -> Result<bool, StoreError> {
        let tags = serde_json::to_string(tags).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE functions SET tags = ?2 WHERE name = ?1",
                params![name.as_str(), tags],
            )?;
            if n == 0 {
                return Ok(false);
            }
            if let Some(latest) = latest {
                put_version(&tx, latest)?;
            }
            tx.commit()?;
            Ok(true)
        })
    }

    // --- concurrency ---

    pub fn reserved_concurrency(&self, name: &FunctionName) -> Result<Option<u32>, StoreError> {
        self.with(|c| {
            let v: Option<Option<u32>> = c
                .query_row(
                    "SELECT reserved_concurrency FROM functions WHERE name = ?1",
                    params![name.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(v.flatten())
        })
    }

    pub fn all_reserved_concurrency(&self) -> Result<Vec<(String, u32)>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT name, reserved_concurrency FROM functions WHERE reserved_concurrency IS NOT NULL",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    pub fn set_reserved_concurrency(
        &self,
        name: &FunctionName,
        value: Option<u32>,
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE functions SET reserved_concurrency = ?2 WHERE name = ?1",
                params![name.as_str(), value],
            )?;
            Ok(n > 0)
        })
    }

    // --- settings ---

    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT value FROM settings WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }

    // --- the async invocation queue ---

    pub fn enqueue_async(&self, inv: &AsyncInvocation, now_ms: i64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO async_invocations (id, function, qualifier, tenant, payload, attempts, next_attempt_ms, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![inv.id, inv.function, inv.qualifier, inv.tenant, inv.payload, inv.attempts, inv.next_attempt_ms, now_ms],
            )?;
            Ok(())
        })
    }

    /// Queued invocations due at `now_ms`, oldest first.
    pub fn due_async(&self, now_ms: i64, limit: usize) -> Result<Vec<AsyncInvocation>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, function, qualifier, tenant, payload, attempts, next_attempt_ms
                 FROM async_invocations WHERE next_attempt_ms <= ?1 ORDER BY next_attempt_ms LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now_ms, limit as i64], |r| {
                Ok(AsyncInvocation {
                    id: r.get(0)?,
                    function: r.get(1)?,
                    qualifier: r.get(2)?,
                    tenant: r.get(3)?,
                    payload: r.get(4)?,
                    attempts: r.get(5)?,
                    next_attempt_ms: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The earliest time anything in the queue is due, if anything is queued.
    pub fn next_async_due(&self) -> Result<Option<i64>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT MIN(next_attempt_ms) FROM async_invocations",
                [],
                |r| r.get(0),
            )?)
        })
    }

    pub fn reschedule_async(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_ms: i64,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE async_invocations SET attempts = ?2, next_attempt_ms = ?3 WHERE id = ?1",
                params![id, attempts, next_attempt_ms],
            )?;
            Ok(())
        })
    }

    pub fn finish_async(&self, id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute("DELETE FROM async_invocations WHERE id = ?1", params![id])?;
            Ok(())
        })
    }

    // --- logs ---

    pub fn create_log_stream(&self, s: &LogStreamInfo) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO log_streams (log_group, log_stream, function, version, tenant_id, environment_id, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (log_group, log_stream) DO UPDATE SET function = excluded.function,
                     version = excluded.version, tenant_id = excluded.tenant_id,
                     environment_id = excluded.environment_id
                 WHERE log_streams.environment_id = ''",
                params![s.log_group, s.log_stream, s.function, s.version, s.tenant_id, s.environment_id, s.created_ms],
            )?;
            Ok(())
        })
    }

    pub fn append_log_events(
        &self,
        events: &[LogEvent],
        ingestion_ms: i64,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                // A batch holds the events of a few streams: look each one up once.
                let mut streams: HashMap<(&str, &str), i64> = HashMap::new();
                let mut insert = tx.prepare_cached(
                    "INSERT INTO log_events (stream_id, timestamp_ms, ingestion_ms, message, request_id, tenant_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for e in events {
                    let key = (e.log_group.as_str(), e.log_stream.as_str());
                    let stream_id = match streams.get(&key) {
                        Some(&id) => id,
                        None => {
                            let id = stream_id(&tx, e)?;
                            streams.insert(key, id);
                            id
                        }
                    };
                    insert.execute(params![stream_id, e.timestamp_ms, ingestion_ms, e.message, e.request_id, e.tenant_id])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Events of one stream in time order (the basis of GetLogEvents and of tests).
    pub fn log_events(
        &self,
        log_group: &str,
        log_stream: &str,
        limit: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT s.log_group, s.log_stream, e.timestamp_ms, e.message, e.request_id, e.tenant_id
                 FROM log_events e JOIN log_streams s ON s.id = e.stream_id
                 WHERE s.log_group = ?1 AND s.log_stream = ?2 ORDER BY e.timestamp_ms, e.id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![log_group, log_stream, limit as i64], |r| {
                Ok(LogEvent {
                    log_group: r.get(0)?,
                    log_stream: r.get(1)?,
                    timestamp_ms: r.get(2)?,
                    message: r.get(3)?,
                    request_id: r.get(4)?,
                    tenant_id: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    pub fn log_streams(&self, log_group: &str) -> Result<Vec<LogStreamInfo>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT log_group, log_stream, function, version, tenant_id, environment_id, created_ms
                 FROM log_streams WHERE log_group = ?1 ORDER BY created_ms, log_stream",
            )?;
            let rows = stmt.query_map(params![log_group], |r| {
                Ok(LogStreamInfo {
                    log_group: r.get(0)?,
                    log_stream: r.get(1)?,
                    function: r.get(2)?,
                    version: r.get(3)?,
                    tenant_id: r.get(4)?,
                    environment_id: r.get(5)?,
                    created_ms: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

/// The id of an event's stream. Streams are recorded when their environment starts; one that
/// was not (its recording failed) gets a row here, so no event is ever dropped.
fn stream_id(c: &Connection, e: &LogEvent) -> Result<i64, StoreError> {
    let found: Option<i64> = c
        .prepare_cached("SELECT id FROM log_streams WHERE log_group = ?1 AND log_stream = ?2")?
        .query_row(params![e.log_group, e.log_stream], |r| r.get(0))
        .optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
    c.prepare_cached(
        "INSERT INTO log_streams (log_group, log_stream, function, version, tenant_id, environment_id, created_ms)
         VALUES (?1, ?2, '', '', ?3, '', ?4)",
    )?
    .execute(params![e.log_group, e.log_stream, e.tenant_id, e.timestamp_ms])?;
    Ok(c.last_insert_rowid())
}

fn put_version(c: &Connection, config: &FunctionConfig) -> Result<(), StoreError> {
    let json = serde_json::to_string(config).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    c.execute(
        "INSERT INTO function_versions (name, version, config) VALUES (?1, ?2, ?3)
         ON CONFLICT(name, version) DO UPDATE SET config = excluded.config",
        params![config.name.as_str(), config.version.to_string(), json],
    )?;
    Ok(())
}

fn decode(json: &str) -> Result<FunctionConfig, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use condo_types::*;

    fn event(stream: &str, ts: i64, message: &str) -> LogEvent {
        LogEvent {
            log_group: "/aws/lambda/f".into(),
            log_stream: stream.into(),
            timestamp_ms: ts,
            message: message.into(),
            request_id: Some("req".into()),
            tenant_id: Some("blue".into()),
        }
    }

    fn messages(store: &Store, stream: &str) -> Vec<String> {
        store
            .log_events("/aws/lambda/f", stream, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    #[test]
    fn log_events_are_kept_per_stream_in_time_order() {
        let store = Store::open_in_memory().unwrap();
        store
            .create_log_stream(&LogStreamInfo {
                log_group: "/aws/lambda/f".into(),
                log_stream: "one".into(),
                function: "f".into(),
                version: "$LATEST".into(),
                tenant_id: Some("blue".into()),
                environment_id: "env-1".into(),
                created_ms: 1,
            })
            .unwrap();
        let batch = [
            event("one", 3, "c"),
            event("never-recorded", 1, "x"),
            event("one", 1, "a"),
            event("one", 2, "b"),
        ];
        store.append_log_events(&batch, 10).unwrap();
        store
            .append_log_events(&[event("one", 4, "d")], 11)
            .unwrap();
        assert_eq!(messages(&store, "one"), ["a", "b", "c", "d"]);
        // An event whose stream was never recorded is kept, under a stream made for it.
        assert_eq!(messages(&store, "never-recorded"), ["x"]);
        let streams = store.log_streams("/aws/lambda/f").unwrap();
        assert_eq!(streams.len(), 2);
        assert!(streams
            .iter()
            .any(|s| s.log_stream == "one" && s.environment_id == "env-1"));
    }

    #[test]
    fn the_stream_id_migration_keeps_every_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("condo.db");
        {
            // A database as the release before it left it: schema version 2.
            let c = Connection::open(&path).unwrap();
            for step in &MIGRATIONS[..2] {
                c.execute_batch(step).unwrap();
            }
            c.pragma_update(None, "user_version", 2).unwrap();
            c.execute_batch(
                "INSERT INTO log_streams VALUES ('/aws/lambda/f', 'one', 'f', '$LATEST', 'blue', 'env-1', 1);
                 INSERT INTO log_events (log_group, log_stream, timestamp_ms, ingestion_ms, message, request_id, tenant_id)
                 VALUES ('/aws/lambda/f', 'one', 2, 5, 'second', 'r', 'blue'),
                        ('/aws/lambda/f', 'one', 1, 5, 'first', 'r', 'blue'),
                        ('/aws/lambda/f', 'orphan', 1, 5, 'kept', 'r', 'green');",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(messages(&store, "one"), ["first", "second"]);
        assert_eq!(messages(&store, "orphan"), ["kept"]);
        store
            .append_log_events(&[event("one", 3, "third")], 6)
            .unwrap();
        assert_eq!(messages(&store, "one"), ["first", "second", "third"]);
    }

    fn config(name: &str) -> FunctionConfig {
        FunctionConfig {
            name: FunctionName::parse(name).unwrap(),
            version: Version::Latest,
            runtime: Runtime::parse("provided.al2023").unwrap(),
            handler: None,
            role: "arn:aws:iam::000000000000:role/r".into(),
            description: String::new(),
            timeout: Timeout::default(),
            memory: MemorySize::default(),
            tmp_size: TmpSize::default(),
            environment: EnvironmentVariables::default(),
            architecture: Architecture::X86_64,
            logging: LoggingConfig::default(),
            tenancy: None,
            network: Default::default(),
            code_id: "ab".repeat(32),
            code_sha256: "x".into(),
            code_size: 1,
            last_modified: "2026-01-01T00:00:00.000+0000".into(),
            revision_id: "r1".into(),
        }
    }

    #[test]
    fn functions_versions_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("condo.db");
        {
            let store = Store::open(&path).unwrap();
            store
                .create_function(&config("b"), &Tags::default(), 1)
                .unwrap();
            store
                .create_function(&config("a"), &Tags::default(), 1)
                .unwrap();
            assert!(matches!(
                store.create_function(&config("a"), &Tags::default(), 1),
                Err(StoreError::AlreadyExists)
            ));
            let v1 = store.publish_version(&config("a"), |_| false).unwrap();
            assert_eq!(v1.version, Version::Published(1));
            // Publishing unchanged code and configuration returns the same version.
            let again = store
                .publish_version(&config("a"), |c| c.code_id == v1.code_id)
                .unwrap();
            assert_eq!(again.version, Version::Published(1));
            let v2 = store.publish_version(&config("a"), |_| false).unwrap();
            assert_eq!(v2.version, Version::Published(2));
            let team: Tags = serde_json::from_str(r#"{"team":"blue"}"#).unwrap();
            let a = FunctionName::parse("a").unwrap();
            assert!(store.set_tags(&a, &team, None).unwrap());
            let nobody = FunctionName::parse("nobody").unwrap();
            assert!(!store.set_tags(&nobody, &team, None).unwrap());
            assert_eq!(store.tags(&nobody).unwrap(), None);
            assert_eq!(store.all_tags().unwrap(), [("a".to_string(), team)]);
        }
        let store = Store::open(&path).unwrap();
        let names: Vec<String> = store
            .list_functions(None, 50)
            .unwrap()
            .into_iter()
            .map(|c| c.name.to_string())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(store.list_functions(Some("a"), 50).unwrap().len(), 1);
        let versions: Vec<String> = store
            .list_versions(&FunctionName::parse("a").unwrap())
            .unwrap()
            .into_iter()
            .map(|c| c.version.to_string())
            .collect();
        assert_eq!(versions, ["$LATEST", "1", "2"]);
        let a = FunctionName::parse("a").unwrap();
        assert_eq!(
            store
                .tags(&a)
                .unwrap()
                .and_then(|t| t.get("team").map(str::to_owned)),
            Some("blue".to_owned())
        );
        assert!(store.set_reserved_concurrency(&a, Some(5)).unwrap());
        assert_eq!(store.reserved_concurrency(&a).unwrap(), Some(5));
        assert!(store.delete(&a, None).unwrap());
        assert!(store
            .get_version(&a, Version::Published(1))
            .unwrap()
            .is_none());
        assert!(!store.delete(&a, None).unwrap());
    }

    #[test]
    fn async_queue_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("condo.db");
        let inv = AsyncInvocation {
            id: "1".into(),
            function: "f".into(),
            qualifier: None,
            tenant: Some("Blue".into()),
            payload: b"{}".to_vec(),
            attempts: 0,
            next_attempt_ms: 100,
        };
        Store::open(&path).unwrap().enqueue_async(&inv, 0).unwrap();
        let store = Store::open(&path).unwrap();
        assert!(store.due_async(99, 10).unwrap().is_empty());
        assert_eq!(store.due_async(100, 10).unwrap(), vec![inv]);
        store.reschedule_async("1", 1, 500).unwrap();
        assert_eq!(store.next_async_due().unwrap(), Some(500));
        store.finish_async("1").unwrap();
        assert_eq!(store.next_async_due().unwrap(), None);
    }
}
