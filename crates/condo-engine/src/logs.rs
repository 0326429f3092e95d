//! Capture of everything an environment prints, attributed to its log stream, the invocation
//! in progress and the tenant; and the writer that persists it in batches.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use condo_store::{LogEvent, Store};
use condo_types::Limits;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

/// CloudWatch caps an event at 256 KB; longer lines are split.
const MAX_EVENT_BYTES: usize = 256 * 1024;

/// How long the sink gathers events before one write. Each write is a SQLite transaction, so
/// at thousands of invocations a second this turns thousands of commits into ten; it is
/// also the longest an event waits before it can be read back.
const BATCH_LINGER: Duration = Duration::from_millis(100);
const MAX_BATCH: usize = 4096;

enum SinkMessage {
    Event(LogEvent),
    Flush(oneshot::Sender<()>),
}

/// Persists log events off the request path, in batches.
#[derive(Debug, Clone)]
pub struct LogSink {
    tx: mpsc::UnboundedSender<SinkMessage>,
}

impl LogSink {
    pub fn spawn(store: Arc<Store>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<SinkMessage>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = Vec::new();
                let mut flushed = Vec::new();
                match first {
                    SinkMessage::Event(e) => {
                        batch.push(e);
                        tokio::time::sleep(BATCH_LINGER).await;
                    }
                    SinkMessage::Flush(ack) => flushed.push(ack),
                }
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(SinkMessage::Event(e)) => batch.push(e),
                        Ok(SinkMessage::Flush(ack)) => flushed.push(ack),
                        Err(_) => break,
                    }
                }
                if !batch.is_empty() {
                    let store = store.clone();
                    let written = tokio::task::spawn_blocking(move || {
                        store.append_log_events(&batch, chrono::Utc::now().timestamp_millis())
                    })
                    .await;
                    if !matches!(written, Ok(Ok(()))) {
                        tracing::warn!("could not persist log events: {written:?}");
                    }
                }
                for ack in flushed {
                    let _ = ack.send(());
                }
            }
        });
        Self { tx }
    }

    pub fn emit(&self, event: LogEvent) {
        let _ = self.tx.send(SinkMessage::Event(event));
    }

    /// Waits until every event emitted before this call is stored.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(SinkMessage::Flush(ack)).is_ok() {
            let _ = done.await;
        }
    }
}

#[derive(Debug, Default)]
struct Current {
    request_id: Option<String>,
    tail: Option<Vec<u8>>,
}

/// The capture of one environment's stdout and stderr (one pipe, so order is kept).
pub struct Capture {
    group: String,
    stream: String,
    tenant: Option<String>,
    sink: LogSink,
    current: Arc<Mutex<Current>>,
    pipe: Arc<Pipe>,
    task: tokio::task::JoinHandle<()>,
}

impl Capture {
    pub fn start(
        output: OwnedFd,
        group: String,
        stream: String,
        tenant: Option<String>,
        sink: LogSink,
    ) -> std::io::Result<Self> {
        let current = Arc::new(Mutex::new(Current::default()));
        let pipe = Arc::new(Pipe::new(
            output,
            Lines {
                partial: Vec::new(),
                group: group.clone(),
                stream: stream.clone(),
                tenant: tenant.clone(),
                sink: sink.clone(),
                current: current.clone(),
            },
        )?);
        let task = tokio::spawn(pipe.clone().read_until_closed());
        Ok(Self {
            group,
            stream,
            tenant,
            sink,
            current,
            pipe,
            task,
        })
    }

    /// Attributes what follows to `request_id`; collects a tail if asked.
    pub fn begin(&self, request_id: &str, tail: bool) {
        if let Ok(mut c) = self.current.lock() {
            c.request_id = Some(request_id.to_owned());
            c.tail = tail.then(Vec::new);
        }
    }

    /// A line written by the platform itself (START, END, REPORT, errors).
    pub fn platform_line(&self, line: &str) {
        let request_id = self.current.lock().ok().and_then(|mut c| {
            if let Some(tail) = c.tail.as_mut() {
                append_tail(tail, line.as_bytes());
            }
            c.request_id.clone()
        });
        self.sink.emit(LogEvent {
            log_group: self.group.clone(),
            log_stream: self.stream.clone(),
            timestamp_ms: chrono::Utc::now().timestamp_millis(),
            message: line.to_owned(),
            request_id,
            tenant_id: self.tenant.clone(),
        });
    }

    /// Takes in everything the program wrote so far. A runtime writes its output before it
    /// posts its response, so after this the invocation's log is complete. The pipe is read
    /// here, in the caller, rather than by asking the reader task: that would put two task
    /// wake-ups on every invocation's path.
    pub fn sync(&self) {
        self.pipe.drain_now();
    }

    /// Ends attribution to the current invocation and returns its tail, if one was collected.
    pub fn end(&self) -> Option<Vec<u8>> {
        self.current.lock().ok().and_then(|mut c| {
            c.request_id = None;
            c.tail.take()
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The read end of an environment's output pipe, read by its own task as output arrives and by
/// [`Capture::sync`] at the end of each invocation; the lock keeps lines whole and in order.
struct Pipe {
    receiver: pipe::Receiver,
    /// The same pipe, read directly. [`Capture::sync`] must see bytes the reactor may not have
    /// reported yet, and the receiver's own reads return `WouldBlock` until it has.
    direct: std::fs::File,
    lines: Mutex<Lines>,
}

impl Pipe {
    fn new(output: OwnedFd, lines: Lines) -> std::io::Result<Self> {
        let direct = std::fs::File::from(output.try_clone()?);
        Ok(Self {
            receiver: pipe::Receiver::from_owned_fd(output)?,
            direct,
            lines: Mutex::new(lines),
        })
    }

    async fn read_until_closed(self: Arc<Self>) {
        loop {
            if self.receiver.readable().await.is_err()
                || !self.drain(false, |buf| self.receiver.try_read(buf))
            {
                return;
            }
        }
    }

    /// Reads everything in the pipe now, whether or not the reactor has seen it.
    fn drain_now(&self) {
        use std::io::Read;
        self.drain(true, |buf| (&self.direct).read(buf));
    }

    /// Reads until the pipe is empty. Returns false at end of file. An unfinished line is kept
    /// for the next read (a program may write one line in pieces) unless `end_line` says the
    /// caller needs everything now.
    fn drain(
        &self,
        end_line: bool,
        mut read: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
    ) -> bool {
        let Ok(mut lines) = self.lines.lock() else {
            return false;
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            match read(&mut buf) {
                Ok(0) => {
                    lines.flush_partial();
                    return false;
                }
                Ok(n) => lines.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if end_line {
                        lines.flush_partial();
                    }
                    return true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    lines.flush_partial();
                    return false;
                }
            }
        }
    }
}

/// Splits output into log events.
struct Lines {
    partial: Vec<u8>,
    group: String,
    stream: String,
    tenant: Option<String>,
    sink: LogSink,
    current: Arc<Mutex<Current>>,
}

impl Lines {
    fn feed(&mut self, mut data: &[u8]) {
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&data[..pos]);
            self.flush_partial();
            data = &data[pos + 1..];
        }
        self.partial.extend_from_slice(data);
        while self.partial.len() >= MAX_EVENT_BYTES {
            let rest = self.partial.split_off(MAX_EVENT_BYTES);
            self.flush_partial();
            self.partial = rest;
        }
    }

    fn flush_partial(&mut self) {
        if self.partial.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.partial);
        let request_id = self.current.lock().ok().and_then(|mut c| {
            if let Some(tail) = c.tail.as_mut() {
                append_tail(tail, &line);
            }
            c.request_id.clone()
        });
        self.sink.emit(LogEvent {
            log_group: self.group.clone(),
            log_stream: self.stream.clone(),
            timestamp_ms: chrono::Utc::now().timestamp_millis(),
            message: String::from_utf8_lossy(&line).into_owned(),
            request_id,
            tenant_id: self.tenant.clone(),
        });
    }
}

/// Appends a line and keeps only the last 4 KB (what `X-Amz-Log-Result` carries).
fn append_tail(tail: &mut Vec<u8>, line: &[u8]) {
    tail.extend_from_slice(line);
    tail.push(b'\n');
    if tail.len() > 2 * Limits::LOG_TAIL_BYTES {
        let cut = tail.len() - Limits::LOG_TAIL_BYTES;
        tail.drain(..cut);
    }
}

/// The last 4 KB of a tail, cut on a UTF-8 boundary.
pub fn finish_tail(mut tail: Vec<u8>) -> Vec<u8> {
    if tail.len() > Limits::LOG_TAIL_BYTES {
        let mut cut = tail.len() - Limits::LOG_TAIL_BYTES;
        while cut < tail.len() && (tail[cut] & 0b1100_0000) == 0b1000_0000 {
            cut += 1;
        }
        tail.drain(..cut);
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn messages(store: &Store, stream: &str) -> Vec<(String, Option<String>)> {
        store
            .log_events("group", stream, 100)
            .unwrap()
            .into_iter()
            .map(|e| (e.message, e.request_id))
            .collect()
    }

    #[tokio::test]
    async fn sink_flush_stores_everything_emitted_before_it() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let sink = LogSink::spawn(store.clone());
        for i in 0..10 {
            sink.emit(LogEvent {
                log_group: "group".into(),
                log_stream: "s".into(),
                timestamp_ms: i,
                message: format!("line {i}"),
                request_id: None,
                tenant_id: None,
            });
        }
        sink.flush().await;
        let stored = messages(&store, "s");
        assert_eq!(stored.len(), 10);
        assert_eq!(stored[9].0, "line 9");
        // A flush with nothing pending returns too.
        sink.flush().await;
    }

    #[tokio::test]
    async fn sync_takes_in_what_was_written_including_an_unfinished_line() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let sink = LogSink::spawn(store.clone());
        let (reader, mut writer) = std::io::pipe().unwrap();
        let capture = Capture::start(
            OwnedFd::from(reader),
            "group".into(),
            "s".into(),
            Some("tenant".into()),
            sink.clone(),
        )
        .unwrap();
        capture.begin("req-1", true);
        writer.write_all(b"hello\nno newline yet").unwrap();
        capture.sync();
        let tail = capture.end().unwrap();
        assert_eq!(tail, b"hello\nno newline yet\n");
        capture.begin("req-2", false);
        writer.write_all(b"second\n").unwrap();
        capture.sync();
        capture.end();
        sink.flush().await;
        assert_eq!(
            messages(&store, "s"),
            [
                ("hello".into(), Some("req-1".into())),
                ("no newline yet".into(), Some("req-1".into())),
                ("second".into(), Some("req-2".into())),
            ]
        );
    }

    #[test]
    fn tail_keeps_the_last_4kb_on_a_char_boundary() {
        let mut tail = Vec::new();
        for i in 0..1000 {
            append_tail(&mut tail, format!("line {i} é").as_bytes());
        }
        let t = finish_tail(tail);
        assert!(t.len() <= Limits::LOG_TAIL_BYTES);
        assert!(std::str::from_utf8(&t).is_ok());
        assert!(String::from_utf8(t).unwrap().ends_with("line 999 é\n"));
    }
}
