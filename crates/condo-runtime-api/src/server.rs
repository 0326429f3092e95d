//! One environment's Runtime API server and the handle the engine drives it with.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// Largest response a function may return: 6 MB, as Lambda.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
/// Error bodies and init errors are small; bound them anyway.
const MAX_ERROR_BYTES: usize = 1024 * 1024;

/// One invocation as the runtime receives it from `/next`.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub payload: Bytes,
    /// Epoch milliseconds by which the function must answer.
    pub deadline_ms: u64,
    pub invoked_function_arn: String,
    pub tenant_id: Option<String>,
    /// Already decoded JSON text (the Invoke API carries it base64-encoded).
    pub client_context: Option<String>,
    pub trace_id: String,
}

/// What the runtime answered for one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvocationOutcome {
    Response(Bytes),
    /// The runtime posted to `/error` (the official clients send no error-type header).
    Error {
        body: Bytes,
        error_type: Option<String>,
    },
    /// The response was larger than [`MAX_RESPONSE_BYTES`].
    ResponseTooLarge,
}

/// The runtime's answer to one invocation, and the hold on its acknowledgement.
#[derive(Debug)]
pub struct Answer {
    pub outcome: InvocationOutcome,
    /// The runtime's `202` is sent once this is dropped. The engine keeps it until it has
    /// handed the answer to its caller, so the caller's answer is written first: the caller is
    /// waiting, the runtime's next `/next` is not. Ordering it this way, rather than yielding,
    /// costs no wake-up of another worker thread.
    pub ack: Acknowledgement,
}

/// See [`Answer::ack`].
#[derive(Debug)]
pub struct Acknowledgement(#[allow(dead_code)] oneshot::Sender<()>);

impl Acknowledgement {
    fn pair() -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Self(tx), rx)
    }
}

/// Where the runtime is in its life, as seen through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Started, has not asked for work yet.
    Initializing,
    /// Asked for its first invocation: initialisation is done.
    Ready,
    /// Posted to `/runtime/init/error`.
    InitError {
        body: Bytes,
        error_type: Option<String>,
    },
}

type Delivery = (Invocation, oneshot::Sender<Answer>);

struct Shared {
    next_rx: tokio::sync::Mutex<mpsc::Receiver<Delivery>>,
    in_flight: Mutex<Option<(String, oneshot::Sender<Answer>)>>,
    phase: watch::Sender<Phase>,
}

/// The engine's handle on one environment's Runtime API. Dropping it stops the server and
/// closes every connection.
pub struct RuntimeApi {
    deliver_tx: mpsc::Sender<Delivery>,
    phase_rx: watch::Receiver<Phase>,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RuntimeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeApi")
            .field("phase", &*self.phase_rx.borrow())
            .finish()
    }
}

impl RuntimeApi {
    /// Serves the Runtime API on `listener` until the handle is dropped.
    pub fn serve(listener: TcpListener) -> Self {
        let (deliver_tx, next_rx) = mpsc::channel(1);
        let (phase, phase_rx) = watch::channel(Phase::Initializing);
        let shared = Arc::new(Shared {
            next_rx: tokio::sync::Mutex::new(next_rx),
            in_flight: Mutex::new(None),
            phase,
        });
        let server = tokio::spawn(accept_loop(listener, shared));
        Self {
            deliver_tx,
            phase_rx,
            server,
        }
    }

    /// Waits until the runtime has finished initialising (or reported an init error).
    pub async fn initialized(&mut self) -> Phase {
        let result = self
            .phase_rx
            .wait_for(|p| !matches!(p, Phase::Initializing))
            .await
            .map(|p| p.clone());
        result.unwrap_or(Phase::Initializing)
    }

    pub fn phase(&self) -> Phase {
        self.phase_rx.borrow().clone()
    }

    /// Hands one invocation to the runtime's next `/next` call. The receiver resolves when the
    /// runtime answers; it is dropped (the receiver sees an error) if the server goes away.
    /// `None` if an invocation is already waiting (one at a time) or the server is gone.
    pub fn deliver(&self, invocation: Invocation) -> Option<oneshot::Receiver<Answer>> {
        let (tx, rx) = oneshot::channel();
        self.deliver_tx.try_send((invocation, tx)).ok().map(|()| rx)
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connection tasks live in this set, so aborting the accept loop closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

const PREFIX: &str = "/2018-06-01/runtime/";

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "InvalidRequest",
            "unknown path",
        ));
    };
    let response = match (req.method(), rest) {
        (&Method::GET, "invocation/next") => next(&shared).await,
        (&Method::POST, "init/error") => init_error(&shared, req).await,
        (&Method::POST, rest) => match rest
            .strip_prefix("invocation/")
            .and_then(|r| r.split_once('/'))
        {
            Some((id, "response")) => {
                let id = id.to_owned();
                respond(&shared, &id, req).await
            }
            Some((id, "error")) => {
                let id = id.to_owned();
                report_error(&shared, &id, req).await
            }
            _ => error(StatusCode::NOT_FOUND, "InvalidRequest", "unknown path"),
        },
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "InvalidRequest",
            "method not allowed",
        ),
    };
    Ok(response)
}

async fn next(shared: &Shared) -> Response<Full<Bytes>> {
    shared.phase.send_if_modified(|p| {
        if *p == Phase::Initializing {
            *p = Phase::Ready;
            true
        } else {
            false
        }
    });
    // While an invocation is in flight, the runtime owes its answer: asking for more work is
    // a protocol violation (one environment runs one invocation at a time).
    if shared.in_flight.lock().map(|s| s.is_some()).unwrap_or(true) {
        return error(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "an invocation is in flight: post its response or error first",
        );
    }
    // With nothing in flight, one /next at a time receives work; a second poll waits its turn.
    let delivery = shared.next_rx.lock().await.recv().await;
    let Some((inv, reply)) = delivery else {
        return error(
            StatusCode::GONE,
            "EnvironmentStopping",
            "the environment is stopping",
        );
    };
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("lambda-runtime-aws-request-id", &inv.request_id)
        .header("lambda-runtime-deadline-ms", inv.deadline_ms.to_string())
        .header(
            "lambda-runtime-invoked-function-arn",
            &inv.invoked_function_arn,
        )
        .header("lambda-runtime-trace-id", &inv.trace_id);
    if let Some(tenant) = &inv.tenant_id {
        builder = builder.header("lambda-runtime-aws-tenant-id", tenant);
    }
    if let Some(ctx) = inv
        .client_context
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        builder = builder.header("lambda-runtime-client-context", ctx);
    }
    if let Ok(mut slot) = shared.in_flight.lock() {
        *slot = Some((inv.request_id.clone(), reply));
    }
    builder.body(Full::new(inv.payload)).unwrap_or_else(|_| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "bad header",
        )
    })
}

/// Takes the in-flight invocation if `id` is the one this environment is working on.
fn take_in_flight(shared: &Shared, id: &str) -> Result<oneshot::Sender<Answer>, Refusal> {
    let Ok(mut slot) = shared.in_flight.lock() else {
        return Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "state poisoned",
        ));
    };
    match slot.take() {
        Some((current, reply)) if current == id => Ok(reply),
        Some(other) => {
            *slot = Some(other);
            Err((
                StatusCode::BAD_REQUEST,
                "InvalidRequestID",
                "unknown request id",
            ))
        }
        None => Err((
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "no invocation in flight with this id",
        )),
    }
}

/// Why the API refused a request: status, error type, message.
type Refusal = (StatusCode, &'static str, &'static str);

async fn respond(shared: &Shared, id: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    // Check the id before reading a possibly large body.
    let reply = match take_in_flight(shared, id) {
        Ok(r) => r,
        Err((status, kind, message)) => return error(status, kind, message),
    };
    match Limited::new(req.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
    {
        Ok(body) => answer(reply, InvocationOutcome::Response(body.to_bytes())).await,
        Err(_) => {
            answer(reply, InvocationOutcome::ResponseTooLarge).await;
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "response payload too large",
            )
        }
    }
}

async fn report_error(shared: &Shared, id: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = match take_in_flight(shared, id) {
        Ok(r) => r,
        Err((status, kind, message)) => return error(status, kind, message),
    };
    let error_type = error_type_header(&req);
    let body = Limited::new(req.into_body(), MAX_ERROR_BYTES)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_else(|_| {
            Bytes::from_static(
                br#"{"errorMessage":"error body too large","errorType":"Runtime.ErrorTooLarge"}"#,
            )
        });
    answer(reply, InvocationOutcome::Error { body, error_type }).await
}

/// Hands the runtime's answer to the engine and waits until the engine lets it go (see
/// [`Answer::ack`]); resolves at once if the engine stopped waiting.
async fn answer(
    reply: oneshot::Sender<Answer>,
    outcome: InvocationOutcome,
) -> Response<Full<Bytes>> {
    let (ack, released) = Acknowledgement::pair();
    // If the engine no longer waits, the answer and its `ack` are dropped here.
    let _ = reply.send(Answer { outcome, ack });
    let _ = released.await;
    accepted()
}

async fn init_error(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let error_type = error_type_header(&req);
    let body = Limited::new(req.into_body(), MAX_ERROR_BYTES)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let changed = shared.phase.send_if_modified(|p| {
        if *p == Phase::Initializing {
            *p = Phase::InitError { body, error_type };
            true
        } else {
            false
        }
    });
    if changed {
        accepted()
    } else {
        error(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "init error after initialisation",
        )
    }
}

fn error_type_header(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect())
}

fn accepted() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(br#"{"status":"OK"}"#)));
    *r.status_mut() = StatusCode::ACCEPTED;
    r
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "errorType": kind, "errorMessage": message }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    fn invocation(id: &str) -> Invocation {
        Invocation {
            request_id: id.to_owned(),
            payload: Bytes::from_static(b"{\"n\":1}"),
            deadline_ms: 0,
            invoked_function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
            tenant_id: Some("t1".into()),
            client_context: None,
            trace_id: "Root=1-0-0".into(),
        }
    }

    /// Reads one HTTP/1.1 response with a content-length body; returns its head and body.
    async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed mid-response");
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.expect("read");
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            return (head, buf[end + 4..end + 4 + length].to_vec());
        }
    }

    /// A Runtime API with one invocation delivered, and a runtime connection that has taken it
    /// from `/next`: the API, the connection, the engine's receiver and the `/next` answer.
    async fn serve_one(
        id: &str,
    ) -> (
        RuntimeApi,
        TcpStream,
        oneshot::Receiver<Answer>,
        (String, Vec<u8>),
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let api = RuntimeApi::serve(listener);
        let mut runtime = TcpStream::connect(addr).await.expect("connect");
        let answered = api.deliver(invocation(id)).expect("delivered");
        runtime
            .write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let next = read_response(&mut runtime).await;
        assert!(next.0.starts_with("HTTP/1.1 200"), "{}", next.0);
        (api, runtime, answered, next)
    }

    #[tokio::test]
    async fn the_runtimes_202_waits_until_the_engine_lets_the_answer_go() {
        let (_api, mut runtime, answered, (head, body)) = serve_one("req-1").await;
        assert!(
            head.contains("lambda-runtime-aws-request-id: req-1"),
            "{head}"
        );
        assert!(head.contains("lambda-runtime-aws-tenant-id: t1"), "{head}");
        assert_eq!(body, b"{\"n\":1}");

        runtime
            .write_all(b"POST /2018-06-01/runtime/invocation/req-1/response HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\n\"ok\"")
            .await
            .expect("write");
        let answer = answered.await.expect("answer");
        assert_eq!(
            answer.outcome,
            InvocationOutcome::Response(Bytes::from_static(b"\"ok\""))
        );
        // Held: the runtime hears nothing while the engine keeps the acknowledgement.
        let mut probe = [0u8; 1];
        let early =
            tokio::time::timeout(Duration::from_millis(100), runtime.read(&mut probe)).await;
        assert!(
            early.is_err(),
            "the 202 went out before the engine let it go"
        );
        drop(answer.ack);
        let (head, body) = read_response(&mut runtime).await;
        assert!(head.starts_with("HTTP/1.1 202"), "{head}");
        assert_eq!(body, br#"{"status":"OK"}"#);
    }

    #[tokio::test]
    async fn a_runtime_is_acknowledged_at_once_when_the_engine_stopped_waiting() {
        let (_api, mut runtime, answered, _) = serve_one("req-2").await;
        // As when an invocation times out: the engine drops its receiver.
        drop(answered);
        runtime
            .write_all(b"POST /2018-06-01/runtime/invocation/req-2/error HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .expect("write");
        let (head, _) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut runtime))
            .await
            .expect("the runtime was left waiting for its 202");
        assert!(head.starts_with("HTTP/1.1 202"), "{head}");
    }
}
