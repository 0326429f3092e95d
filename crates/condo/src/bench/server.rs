//! A `condo serve` of the benchmark's own: this binary, a free port, a fresh data directory,
//! removed when dropped. Also reads what the server and its environments use.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use condo_api::sigv4;

pub struct BenchServer {
    child: Child,
    data_dir: PathBuf,
    pub endpoint: String,
    pub credentials: sigv4::Credentials,
}

/// Memory of a server and its environments, in MB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub platform_rss_mb: f64,
    /// Everything charged to the environments' cgroups (processes, `/tmp`, page cache).
    pub sandboxes_mb: f64,
}

impl BenchServer {
    pub async fn start(flags: &[&str]) -> anyhow::Result<Self> {
        let data_dir = std::env::temp_dir().join(format!(
            "condo-bench-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&data_dir)?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(flags)
            .env("CONDO_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting condo serve")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let endpoint = tokio::task::spawn_blocking(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.ok()?;
                if let Some(url) = line.strip_prefix("condo ready on ") {
                    return Some(url.trim().to_owned());
                }
            }
            None
        })
        .await?;
        let Some(endpoint) = endpoint else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("condo serve exited before it was ready");
        };
        let raw = std::fs::read_to_string(data_dir.join("credentials.json"))
            .context("reading the server's credentials")?;
        let credentials = crate::client::parse_credentials(&raw)?;
        Ok(Self {
            child,
            data_dir,
            endpoint,
            credentials,
        })
    }

    /// Creates a function (tenant isolation mode when `per_tenant`).
    pub async fn deploy(
        &self,
        name: &str,
        runtime: &str,
        handler: Option<&str>,
        zip: &[u8],
        per_tenant: bool,
        tags: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let mut body = serde_json::json!({
            "FunctionName": name, "Runtime": runtime, "MemorySize": 128, "Timeout": 30,
            "Role": "arn:aws:iam::000000000000:role/condo-bench",
            "Code": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) },
        });
        if let Some(h) = handler {
            body["Handler"] = h.into();
        }
        if per_tenant {
            body["TenancyConfig"] = serde_json::json!({ "TenantIsolationMode": "PER_TENANT" });
        }
        if !tags.is_empty() {
            body["Tags"] = tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        let (status, answer) = self
            .call("/2015-03-31/functions", None, body.to_string().into_bytes())
            .await?;
        if status != 201 {
            bail!("creating {name}: {status} {answer}");
        }
        Ok(())
    }

    /// One synchronous invoke as `tenant`.
    pub async fn invoke_once(&self, name: &str, tenant: &str) -> anyhow::Result<()> {
        let (status, answer) = self
            .call(
                &format!("/2015-03-31/functions/{name}/invocations"),
                Some(tenant),
                b"{}".to_vec(),
            )
            .await?;
        if status != 200 {
            bail!("invoking {name}: {status} {answer}");
        }
        Ok(())
    }

    async fn call(
        &self,
        path: &str,
        tenant: Option<&str>,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, String)> {
        let endpoint = self.endpoint.clone();
        let creds = self.credentials.clone();
        let (path, tenant) = (path.to_owned(), tenant.map(str::to_owned));
        tokio::task::spawn_blocking(move || {
            let host = endpoint.split("://").nth(1).unwrap_or(&endpoint).to_owned();
            let mut headers = http::HeaderMap::new();
            headers.insert("host", host.parse()?);
            headers.insert("content-type", "application/json".parse()?);
            if let Some(t) = &tenant {
                headers.insert("x-amz-tenant-id", t.parse()?);
            }
            let signed = sigv4::sign(
                "POST",
                &path,
                None,
                &headers,
                &body,
                &creds,
                "us-east-1",
                "lambda",
                chrono::Utc::now(),
            );
            let mut req = ureq::post(&format!("{endpoint}{path}"));
            for (k, v) in &headers {
                if k != "host" {
                    req = req.set(k.as_str(), v.to_str().unwrap_or(""));
                }
            }
            for (k, v) in &signed {
                req = req.set(k, v);
            }
            match req.send_bytes(&body) {
                Ok(r) => {
                    let status = r.status();
                    Ok((status, r.into_string().unwrap_or_default()))
                }
                Err(ureq::Error::Status(status, r)) => {
                    Ok((status, r.into_string().unwrap_or_default()))
                }
                Err(e) => Err(anyhow::anyhow!("{e}")),
            }
        })
        .await?
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Live environments: the server's children that are sandbox init steps.
    pub fn environments(&self) -> usize {
        environments_of(self.pid())
    }

    pub fn memory(&self) -> Memory {
        memory_of(self.pid(), &self.data_dir)
    }

    /// Samples environments and memory in the background until `stop`.
    pub fn sample_every(&self, every: Duration) -> Sampler {
        let done = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new(Mutex::new(Samples::default()));
        let pid = self.pid();
        let data_dir = self.data_dir.clone();
        let (d, p) = (done.clone(), peaks.clone());
        let handle = std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                let envs = environments_of(pid);
                let mem = memory_of(pid, &data_dir);
                if let Ok(mut s) = p.lock() {
                    s.peak_environments = s.peak_environments.max(envs);
                    s.peak_platform_rss_mb = s.peak_platform_rss_mb.max(mem.platform_rss_mb);
                    s.peak_sandbox_memory_mb = s.peak_sandbox_memory_mb.max(mem.sandboxes_mb);
                }
                std::thread::sleep(every);
            }
        });
        Sampler {
            done,
            peaks,
            handle: Some(handle),
        }
    }
}

fn environments_of(pid: u32) -> usize {
    children_of(pid)
        .iter()
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/cmdline"))
                .is_ok_and(|c| c.contains(condo_sandbox::INIT_ARG))
        })
        .count()
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Samples {
    pub peak_environments: usize,
    pub peak_platform_rss_mb: f64,
    pub peak_sandbox_memory_mb: f64,
}

pub struct Sampler {
    done: Arc<AtomicBool>,
    peaks: Arc<Mutex<Samples>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub async fn stop(mut self) -> Samples {
        self.done.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        self.peaks.lock().map(|s| *s).unwrap_or_default()
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let me = pid.to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(|pp| pp == me))
                    .unwrap_or(false)
            })
        })
        .collect()
}

fn memory_of(pid: u32, data_dir: &std::path::Path) -> Memory {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let parent = condo_engine::cgroup_parent(data_dir);
    let v1 = PathBuf::from("/sys/fs/cgroup/memory")
        .join(&parent)
        .join("memory.usage_in_bytes");
    let v2 = PathBuf::from("/sys/fs/cgroup")
        .join(&parent)
        .join("memory.current");
    let bytes = std::fs::read_to_string(v1)
        .or_else(|_| std::fs::read_to_string(v2))
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    Memory {
        platform_rss_mb: (rss / 1024.0 * 10.0).round() / 10.0,
        sandboxes_mb: (bytes / 1_048_576.0 * 10.0).round() / 10.0,
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        // SIGTERM: the server stops its environments and removes its cgroups.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
