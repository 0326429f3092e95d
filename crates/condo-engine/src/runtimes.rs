//! Which runtimes this host can serve, and how an environment of each one starts: the program,
//! the files it needs, and the standard Lambda environment variables.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use condo_sandbox::{BindMount, FileSpec, Network, ResourceLimits, SandboxSpec};
use condo_types::{FunctionConfig, LogFormat, NetworkAccess, Runtime, RuntimeFamily};

/// The Runtime API address inside every environment's own network namespace.
pub const RUNTIME_API_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9001);

const NODE_BOOTSTRAP: &str = include_str!("../../../runtimes/nodejs/bootstrap.mjs");
const PYTHON_BOOTSTRAP: &str = include_str!("../../../runtimes/python/bootstrap.py");

/// Interpreters found on this host, by runtime.
#[derive(Debug, Clone, Default)]
pub struct HostRuntimes {
    python: BTreeMap<u8, PathBuf>,
    node: BTreeMap<u8, PathBuf>,
}

impl HostRuntimes {
    /// Looks for `python3.N` and `node` under `/usr/bin` (the tree every sandbox sees).
    pub fn probe() -> Self {
        let mut found = Self::default();
        if let Ok(entries) = std::fs::read_dir("/usr/bin") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if let Some(minor) = name
                    .strip_prefix("python3.")
                    .and_then(|m| m.parse::<u8>().ok())
                {
                    found.python.insert(minor, entry.path());
                }
            }
        }
        let node = PathBuf::from("/usr/bin/node");
        if let Some(major) = node_major(&node) {
            found.node.insert(major, node);
        }
        found
    }

    /// The interpreter for `runtime`, or `None` when this host cannot serve it.
    pub fn interpreter(&self, runtime: Runtime) -> Option<&Path> {
        match runtime {
            Runtime::Provided(_) => Some(Path::new("/var/task/bootstrap")),
            Runtime::Python { minor } => self.python.get(&minor).map(PathBuf::as_path),
            Runtime::Nodejs { major } => self.node.get(&major).map(PathBuf::as_path),
        }
    }

    pub fn supports(&self, runtime: Runtime) -> bool {
        self.interpreter(runtime).is_some()
    }

    /// Every runtime this host serves, for error messages and `condo env`.
    pub fn supported(&self) -> Vec<String> {
        let mut all = vec![
            "provided".to_owned(),
            "provided.al2".to_owned(),
            "provided.al2023".to_owned(),
        ];
        all.extend(self.node.keys().map(|m| format!("nodejs{m}.x")));
        all.extend(self.python.keys().map(|m| format!("python3.{m}")));
        all
    }
}

fn node_major(node: &Path) -> Option<u8> {
    let out = std::process::Command::new(node)
        .arg("--version")
        .env_clear()
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.trim()
        .strip_prefix('v')?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Writes the managed-runtime bootstraps into `dir/<family>/` so environments can bind them.
pub fn install_bootstraps(dir: &Path) -> std::io::Result<()> {
    for (family, file, contents) in [
        ("nodejs", "bootstrap.mjs", NODE_BOOTSTRAP),
        ("python", "bootstrap.py", PYTHON_BOOTSTRAP),
    ] {
        let d = dir.join(family);
        std::fs::create_dir_all(&d)?;
        let path = d.join(file);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(contents) {
            let tmp = d.join(format!(".{file}.tmp"));
            std::fs::write(&tmp, contents)?;
            std::fs::rename(&tmp, &path)?;
        }
    }
    Ok(())
}

/// Everything an environment's sandbox needs that is not in the function's configuration.
#[derive(Debug, Clone)]
pub struct SandboxBase {
    pub runtimes_dir: PathBuf,
    pub region: String,
}

/// Identity of the environment being built, for its variables and hostname.
#[derive(Debug, Clone)]
pub struct EnvironmentIdentity<'a> {
    pub id: &'a str,
    pub log_stream: &'a str,
}

/// Environment variables Lambda reserves; functions may not set them.
pub const RESERVED_VARIABLES: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// The sandbox of one environment of `config`.
pub fn sandbox_spec(
    base: &SandboxBase,
    runtimes: &HostRuntimes,
    config: &FunctionConfig,
    code_dir: &Path,
    identity: &EnvironmentIdentity<'_>,
) -> Option<SandboxSpec> {
    let interpreter = runtimes
        .interpreter(config.runtime)?
        .to_string_lossy()
        .into_owned();
    let handler = config.handler.clone().unwrap_or_default();
    let (argv, runtime_dir) = match config.runtime.family() {
        RuntimeFamily::Provided => (vec![interpreter], None),
        RuntimeFamily::Python => (
            // -I: ignore PYTHON* and user site; -S: no site import (fast start); -u: unbuffered,
            // so a line printed before the response is captured with that invocation.
            vec![
                interpreter,
                "-I".into(),
                "-S".into(),
                "-u".into(),
                "/var/runtime/bootstrap.py".into(),
            ],
            Some(base.runtimes_dir.join("python")),
        ),
        RuntimeFamily::Nodejs => (
            vec![interpreter, "/var/runtime/bootstrap.mjs".into()],
            Some(base.runtimes_dir.join("nodejs")),
        ),
    };

    let mut binds = vec![BindMount::read_only(code_dir, "/var/task")];
    if let Some(dir) = runtime_dir {
        binds.push(BindMount::read_only(dir, "/var/runtime"));
    }

    let mut env: Vec<(String, String)> = config
        .environment
        .iter()
        .filter(|(k, _)| !RESERVED_VARIABLES.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let set = |env: &mut Vec<(String, String)>, k: &str, v: String| {
        env.retain(|(key, _)| key != k);
        env.push((k.to_owned(), v));
    };
    set(
        &mut env,
        "PATH",
        "/usr/local/bin:/usr/bin:/bin:/opt/bin".into(),
    );
    set(&mut env, "LANG", "C.UTF-8".into());
    set(&mut env, "TZ", ":UTC".into());
    set(&mut env, "LD_LIBRARY_PATH", "/var/task/lib:/opt/lib".into());
    if config.runtime.family() == RuntimeFamily::Nodejs {
        set(
            &mut env,
            "NODE_PATH",
            "/opt/nodejs/node_modules:/var/runtime/node_modules:/var/task/node_modules".into(),
        );
    }
    if config.runtime.family() == RuntimeFamily::Python {
        set(&mut env, "PYTHONDONTWRITEBYTECODE", "1".into());
    }
    for (k, v) in [
        ("_HANDLER", handler),
        ("AWS_REGION", base.region.clone()),
        ("AWS_DEFAULT_REGION", base.region.clone()),
        (
            "AWS_EXECUTION_ENV",
            format!("AWS_Lambda_{}", config.runtime),
        ),
        ("AWS_LAMBDA_FUNCTION_NAME", config.name.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", config.version.to_string()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            config.memory.get().to_string(),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", config.log_group()),
        ("AWS_LAMBDA_LOG_STREAM_NAME", identity.log_stream.to_owned()),
        ("AWS_LAMBDA_RUNTIME_API", RUNTIME_API_ADDR.to_string()),
        ("LAMBDA_TASK_ROOT", "/var/task".into()),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime".into()),
    ] {
        set(&mut env, k, v);
    }
    if config.logging.log_format == LogFormat::Json {
        set(&mut env, "AWS_LAMBDA_LOG_FORMAT", "JSON".into());
        if let Some(level) = &config.logging.application_log_level {
            set(&mut env, "AWS_LAMBDA_LOG_LEVEL", level.clone());
        }
    }

    Some(SandboxSpec {
        binds,
        symlinks: Vec::new(),
        files: vec![
            FileSpec {
                path: "/etc/passwd".into(),
                contents: format!(
                    "root:x:0:0:root:/root:/sbin/nologin\nsbx_user1051:x:{FUNCTION_UID}:{FUNCTION_GID}::/tmp:/sbin/nologin\n",
                ),
            },
            FileSpec { path: "/etc/group".into(), contents: format!("root:x:0:\nsbx_user1051:x:{FUNCTION_GID}:\n") },
            FileSpec { path: "/etc/hosts".into(), contents: "127.0.0.1\tlocalhost\n::1\tlocalhost\n".into() },
            FileSpec { path: "/etc/resolv.conf".into(), contents: resolv_conf(config.network) },
        ],
        tmp_size_bytes: u64::from(config.tmp_size.get()) * 1024 * 1024,
        hostname: format!("condo-{}", &identity.id[..identity.id.len().min(12)]),
        uid: FUNCTION_UID,
        gid: FUNCTION_GID,
        cwd: "/var/task".into(),
        argv,
        env,
        limits: resource_limits(config.memory.get()),
        network: match config.network {
            NetworkAccess::None => Network::LoopbackOnly,
            NetworkAccess::Outbound => Network::Outbound,
        },
    })
}

/// Environments without outbound access have nowhere to send a query.
fn resolv_conf(network: NetworkAccess) -> String {
    match network {
        NetworkAccess::None => String::new(),
        NetworkAccess::Outbound => {
            format!("nameserver {}\n", condo_sandbox::DNS_FORWARD_ADDR)
        }
    }
}

/// The identity functions see inside their user namespace, as on Lambda (`sbx_user1051`).
/// Outside, each environment runs as a host uid of its own.
pub const FUNCTION_UID: u32 = 993;
pub const FUNCTION_GID: u32 = 990;

/// Memory at which Lambda gives a function one whole vCPU.
const MB_PER_VCPU: u64 = 1769;

/// An environment's limits: its memory, a CPU share proportional to it as on Lambda, but never
/// capped below one CPU (so a small function is not starved on an idle host), and Lambda's
/// process and file limits.
pub fn resource_limits(memory_mb: u32) -> ResourceLimits {
    let mb = u64::from(memory_mb);
    ResourceLimits {
        memory_bytes: mb << 20,
        cpu_weight: (mb * 100 / MB_PER_VCPU).max(1) as u32,
        cpu_max_millis: (mb * 1000 / MB_PER_VCPU).max(1000) as u32,
        max_pids: 1024,
        open_files: 1024,
    }
}
