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

/// Persists log events off the request path, in batches.
#[derive(Debug, Clone)]
pub struct LogSink {
    tx: mpsc::UnboundedSender<LogEvent>,
}

impl LogSink {
    pub fn spawn(store: Arc<Store>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<LogEvent>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while let Some(first) = rx.recv().await {
                batch.push(first);
                // Gather what else is already queued (bounded), then write once.
                while batch.len() < 2048 {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                let events = std::mem::take(&mut batch);
                let store = store.clone();
                let written = tokio::task::spawn_blocking(move || {
                    store.append_log_events(&events, chrono::Utc::now().timestamp_millis())
                })
                .await;
                if !matches!(written, Ok(Ok(()))) {
                    tracing::warn!("could not persist log events: {written:?}");
                }
            }
        });
        Self { tx }
    }

    pub fn emit(&self, event: LogEvent) {
        let _ = self.tx.send(event);
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
    sync_tx: mpsc::Sender<oneshot::Sender<()>>,
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
        let receiver = pipe::Receiver::from_owned_fd(output)?;
        let current = Arc::new(Mutex::new(Current::default()));
        let (sync_tx, sync_rx) = mpsc::channel(4);
        let reader = Reader {
            receiver,
            partial: Vec::new(),
            group: group.clone(),
            stream: stream.clone(),
            tenant: tenant.clone(),
            sink: sink.clone(),
            current: current.clone(),
        };
        let task = tokio::spawn(reader.run(sync_rx));
        Ok(Self {
            group,
            stream,
            tenant,
            sink,
            current,
            sync_tx,
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

    /// Waits until everything the program wrote so far has been captured. A runtime writes its
    /// output before it posts its response, so after this the invocation's log is complete.
    pub async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        if self.sync_tx.send(tx).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), rx).await;
        }
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

struct Reader {
    receiver: pipe::Receiver,
    partial: Vec<u8>,
    group: String,
    stream: String,
    tenant: Option<String>,
    sink: LogSink,
    current: Arc<Mutex<Current>>,
}

impl Reader {
    async fn run(mut self, mut sync_rx: mpsc::Receiver<oneshot::Sender<()>>) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                biased;
                ready = self.receiver.readable() => {
                    if ready.is_err() || !self.read_available(&mut buf) {
                        self.flush_partial();
                        return;
                    }
                }
                Some(ack) = sync_rx.recv() => {
                    self.read_available(&mut buf);
                    self.flush_partial();
                    let _ = ack.send(());
                }
            }
        }
    }

    /// Reads everything currently in the pipe. Returns false at end of file.
    fn read_available(&mut self, buf: &mut [u8]) -> bool {
        loop {
            match self.receiver.try_read(buf) {
                Ok(0) => return false,
                Ok(n) => self.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

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
