//! What condo is compared with in the same run: the raw floor (one keep-alive HTTP round trip
//! on loopback to a server that echoes the body) and `cargo lambda watch` (the Rust ecosystem's
//! local Lambda emulator) running the same function.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use http_body_util::BodyExt;

use super::server::BenchServer;
use crate::loadgen::{self, LoadResult, LoadSpec, Tenants};

fn spec(endpoint: String, function: &str, concurrency: usize, requests: usize) -> LoadSpec {
    LoadSpec {
        endpoint,
        // The peers ignore signatures; signing anyway keeps the client's work identical.
        credentials: condo_api::sigv4::Credentials {
            access_key_id: "bench".into(),
            secret_access_key: "bench".into(),
        },
        region: "us-east-1".into(),
        function: function.into(),
        tenants: Tenants::Fixed(None),
        concurrency,
        requests,
        warm_up: true,
        payload_bytes: 1024,
        pause: Duration::ZERO,
        interval: Duration::ZERO,
        stop: None,
    }
}

/// An HTTP/1.1 server on loopback that answers every request with its body.
pub struct Floor {
    endpoint: String,
    task: tokio::task::JoinHandle<()>,
}

impl Floor {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |req: http::Request<hyper::body::Incoming>| async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(
                                body,
                            )))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { endpoint, task })
    }

    pub async fn run(&self, concurrency: usize, requests: usize) -> anyhow::Result<LoadResult> {
        loadgen::run(
            spec(self.endpoint.clone(), "floor", concurrency, requests),
            None,
        )
        .await
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `cargo lambda watch` serving the benchmark's echo function.
pub struct CargoLambda {
    child: Child,
    endpoint: String,
    function: String,
}

/// Where the harness keeps the tools it installs.
fn tools_dir(function_dir: &Path) -> PathBuf {
    function_dir
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("target"), |root| root.join("target"))
        .join("bench-tools")
}

impl CargoLambda {
    pub async fn start(function_dir: &Path) -> anyhow::Result<Self> {
        let tools = tools_dir(function_dir);
        let binary = tools.join("bin").join("cargo-lambda");
        if !binary.is_file() {
            eprintln!(
                "installing cargo-lambda into {} (once; takes minutes)...",
                tools.display()
            );
            let status = Command::new("cargo")
                .args(["install", "cargo-lambda", "--locked", "--quiet", "--root"])
                .arg(&tools)
                // A kept build directory lets an interrupted install resume where it stopped.
                .arg("--target-dir")
                .arg(tools.join("install-build"))
                .status()
                .context("running cargo install")?;
            if !status.success() || !binary.is_file() {
                bail!("cargo install cargo-lambda failed");
            }
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let target = tools.join("peer-target");
        let child = Command::new(&binary)
            .args([
                "lambda",
                "watch",
                "--release",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
            ])
            .arg(port.to_string())
            .current_dir(function_dir)
            .env("CARGO_TARGET_DIR", &target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting cargo lambda watch")?;
        let mut peer = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            function: String::new(),
        };
        // The first invoke compiles the function: wait for an answer.
        eprintln!("waiting for cargo lambda watch to build and answer...");
        let deadline = Instant::now() + Duration::from_secs(900);
        while Instant::now() < deadline {
            for name in ["bootstrap", "_"] {
                let url = format!("{}/2015-03-31/functions/{name}/invocations", peer.endpoint);
                let ok = tokio::task::spawn_blocking(move || {
                    ureq::post(&url)
                        .timeout(Duration::from_secs(600))
                        .send_string("{}")
                        .is_ok()
                })
                .await?;
                if ok {
                    peer.function = name.into();
                    return Ok(peer);
                }
            }
            if let Ok(Some(status)) = peer.child.try_wait() {
                bail!("cargo lambda watch exited ({status})");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        bail!("cargo lambda watch did not answer within 15 minutes")
    }

    pub async fn run(
        &self,
        _condo: &BenchServer,
        concurrency: usize,
        requests: usize,
    ) -> anyhow::Result<LoadResult> {
        loadgen::run(
            spec(self.endpoint.clone(), &self.function, concurrency, requests),
            None,
        )
        .await
    }
}

impl Drop for CargoLambda {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
