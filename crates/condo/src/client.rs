//! The human CLI: talks to a running `condo serve` over its Lambda API, signed with SigV4.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use base64::Engine as _;
use condo_api::sigv4;

/// Where the server is and how to sign for it.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// The server's URL.
    #[arg(long, env = "CONDO_ENDPOINT", default_value = "http://127.0.0.1:9700")]
    pub endpoint: String,
    /// The server's data directory, where its generated credentials are kept.
    #[arg(long, env = "CONDO_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "CONDO_REGION", default_value = "us-east-1")]
    pub region: String,
}

#[derive(clap::Args, Debug)]
pub struct EnvArgs {
    #[command(flatten)]
    conn: Connection,
}

#[derive(clap::Args, Debug)]
pub struct InvokeArgs {
    /// Function name, `name:qualifier`, or ARN.
    name: String,
    /// Tenant id (required for functions in tenant isolation mode).
    #[arg(long)]
    tenant_id: Option<String>,
    /// JSON event.
    #[arg(long, default_value = "{}")]
    payload: String,
    /// Print the invocation's log (last 4 KB) to stderr.
    #[arg(long)]
    log: bool,
    #[command(flatten)]
    conn: Connection,
}

#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// Directory to zip as the function's code.
    dir: PathBuf,
    #[arg(long)]
    name: String,
    #[arg(long)]
    runtime: String,
    /// Handler (`index.handler`, `app.handler`); not needed for `provided` runtimes.
    #[arg(long)]
    handler: Option<String>,
    /// Create the function in tenant isolation mode (PER_TENANT). Only at creation.
    #[arg(long)]
    tenant_isolation: bool,
    #[arg(long)]
    memory: Option<u32>,
    #[arg(long)]
    timeout: Option<u32>,
    /// What the function's environments may reach: `none` (their own loopback only, the
    /// default) or `outbound` (connections out through the host). Sets the `condo:network` tag.
    #[arg(long, value_parser = ["none", "outbound"])]
    network: Option<String>,
    /// Invocations one tenant may have in flight at once (tenant isolation mode), so a noisy
    /// tenant cannot take the whole function. Sets the `condo:tenant-max-concurrency` tag.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    tenant_max_concurrency: Option<u32>,
    #[arg(long, default_value = "arn:aws:iam::000000000000:role/condo-function")]
    role: String,
    #[command(flatten)]
    conn: Connection,
}

/// The condo tags the deploy flags ask for.
fn condo_tags(args: &DeployArgs) -> serde_json::Map<String, serde_json::Value> {
    let mut tags = serde_json::Map::new();
    if let Some(network) = &args.network {
        tags.insert(
            condo_types::NetworkAccess::TAG.into(),
            network.clone().into(),
        );
    }
    if let Some(cap) = args.tenant_max_concurrency {
        tags.insert(
            condo_types::TENANT_CONCURRENCY_TAG.into(),
            cap.to_string().into(),
        );
    }
    tags
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The AWS error in the body, as `Type: message`.
    fn error(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        let kind = self
            .header("x-amzn-errortype")
            .unwrap_or("Error")
            .to_owned();
        let msg = v["message"]
            .as_str()
            .or(v["Message"].as_str())
            .unwrap_or("")
            .to_owned();
        format!("{kind}: {msg} (HTTP {})", self.status)
    }

    fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("the server's answer is not JSON")
    }
}

/// Keys to sign with: `CONDO_*` variables, else the pair kept in the server's data directory,
/// else the shell's `AWS_*` variables. The data directory comes before `AWS_*` so that `condo env`
/// never hands out some other account's keys for this server.
/// A server's `credentials.json`.
pub fn parse_credentials(text: &str) -> anyhow::Result<sigv4::Credentials> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    match (v["AccessKeyId"].as_str(), v["SecretAccessKey"].as_str()) {
        (Some(id), Some(secret)) => Ok(sigv4::Credentials {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
        }),
        _ => bail!("malformed credentials"),
    }
}

pub fn credentials(conn: &Connection) -> anyhow::Result<sigv4::Credentials> {
    let from_env = |id: &str, secret: &str| match (std::env::var(id), std::env::var(secret)) {
        (Ok(id), Ok(secret)) if !id.is_empty() && !secret.is_empty() => Some(sigv4::Credentials {
            access_key_id: id,
            secret_access_key: secret,
        }),
        _ => None,
    };
    if let Some(c) = from_env("CONDO_ACCESS_KEY_ID", "CONDO_SECRET_ACCESS_KEY") {
        return Ok(c);
    }
    let dir = conn
        .data_dir
        .clone()
        .unwrap_or_else(crate::default_data_dir);
    let path = dir.join("credentials.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_credentials(&text).with_context(|| format!("{}", path.display())),
        Err(e) => from_env("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY").ok_or_else(|| {
            anyhow::anyhow!(
                "no credentials: set CONDO_ACCESS_KEY_ID/CONDO_SECRET_ACCESS_KEY, or point --data-dir at the server's data directory ({}: {e})",
                path.display()
            )
        }),
    }
}

fn call(
    conn: &Connection,
    method: &str,
    path: &str,
    query: Option<&str>,
    extra: &[(&str, String)],
    body: &[u8],
) -> anyhow::Result<Answer> {
    let creds = credentials(conn)?;
    let base = conn.endpoint.trim_end_matches('/');
    let host = base
        .split("://")
        .nth(1)
        .unwrap_or(base)
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned();
    let mut headers = http::HeaderMap::new();
    headers.insert("host", host.parse()?);
    if !body.is_empty() {
        headers.insert("content-type", "application/json".parse()?);
    }
    for (k, v) in extra {
        headers.insert(http::HeaderName::from_bytes(k.as_bytes())?, v.parse()?);
    }
    let signed = sigv4::sign(
        method,
        path,
        query,
        &headers,
        body,
        &creds,
        &conn.region,
        "lambda",
        chrono::Utc::now(),
    );
    let url = match query {
        Some(q) => format!("{base}{path}?{q}"),
        None => format!("{base}{path}"),
    };
    let mut req = ureq::request(method, &url);
    for (k, v) in headers.iter() {
        if k != "host" {
            req = req.set(k.as_str(), v.to_str()?);
        }
    }
    for (k, v) in &signed {
        req = req.set(k, v);
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => bail!("cannot reach condo at {base}: {e} (is `condo serve` running?)"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_owned())))
        .collect();
    let mut body = Vec::new();
    resp.into_reader().take(64 << 20).read_to_end(&mut body)?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn encode_path(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn env(args: EnvArgs) -> anyhow::Result<()> {
    let creds = credentials(&args.conn)?;
    let endpoint = args.conn.endpoint.trim_end_matches('/');
    println!("export AWS_ENDPOINT_URL={endpoint}");
    println!("export AWS_ACCESS_KEY_ID={}", creds.access_key_id);
    println!("export AWS_SECRET_ACCESS_KEY={}", creds.secret_access_key);
    println!("export AWS_DEFAULT_REGION={}", args.conn.region);
    println!("export AWS_REGION={}", args.conn.region);
    println!("export CONDO_ENDPOINT={endpoint}");
    Ok(())
}

pub fn invoke(args: InvokeArgs) -> anyhow::Result<()> {
    let path = format!(
        "/2015-03-31/functions/{}/invocations",
        encode_path(&args.name)
    );
    let mut headers = Vec::new();
    if let Some(t) = &args.tenant_id {
        headers.push(("x-amz-tenant-id", t.clone()));
    }
    if args.log {
        headers.push(("x-amz-log-type", "Tail".to_owned()));
    }
    let answer = call(
        &args.conn,
        "POST",
        &path,
        None,
        &headers,
        args.payload.as_bytes(),
    )?;
    if answer.status >= 300 {
        bail!("{}", answer.error());
    }
    if let Some(tail) = answer.header("x-amz-log-result") {
        let log = base64::engine::general_purpose::STANDARD
            .decode(tail)
            .unwrap_or_default();
        eprint!("{}", String::from_utf8_lossy(&log));
    }
    std::io::stdout().write_all(&answer.body)?;
    println!();
    if answer.header("x-amz-function-error").is_some() {
        bail!("the function returned an error (above)");
    }
    Ok(())
}

pub fn functions(conn: Connection) -> anyhow::Result<()> {
    let mut rows = vec![[
        "NAME",
        "RUNTIME",
        "MEMORY",
        "TIMEOUT",
        "TENANCY",
        "LAST MODIFIED",
    ]
    .map(String::from)];
    let mut marker: Option<String> = None;
    loop {
        let query = marker
            .as_ref()
            .map(|m| format!("Marker={}", encode_path(m)));
        let answer = call(
            &conn,
            "GET",
            "/2015-03-31/functions",
            query.as_deref(),
            &[],
            b"",
        )?;
        if answer.status >= 300 {
            bail!("{}", answer.error());
        }
        let v = answer.json()?;
        for f in v["Functions"].as_array().into_iter().flatten() {
            rows.push([
                f["FunctionName"].as_str().unwrap_or("").to_owned(),
                f["Runtime"].as_str().unwrap_or("").to_owned(),
                format!("{} MB", f["MemorySize"]),
                format!("{} s", f["Timeout"]),
                f["TenancyConfig"]["TenantIsolationMode"]
                    .as_str()
                    .unwrap_or("shared")
                    .to_owned(),
                f["LastModified"].as_str().unwrap_or("").to_owned(),
            ]);
        }
        marker = v["NextMarker"].as_str().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let zip = zip_dir(&args.dir)?;
    let zip_b64 = base64::engine::general_purpose::STANDARD.encode(&zip);
    let name_path = encode_path(&args.name);
    let existing = call(
        &args.conn,
        "GET",
        &format!("/2015-03-31/functions/{name_path}/configuration"),
        None,
        &[],
        b"",
    )?;
    let answer = if existing.status == 404 {
        let mut body = serde_json::json!({
            "FunctionName": args.name, "Runtime": args.runtime, "Role": args.role,
            "Code": { "ZipFile": zip_b64 },
        });
        if let Some(h) = &args.handler {
            body["Handler"] = h.clone().into();
        }
        if let Some(m) = args.memory {
            body["MemorySize"] = m.into();
        }
        if let Some(t) = args.timeout {
            body["Timeout"] = t.into();
        }
        if args.tenant_isolation {
            body["TenancyConfig"] = serde_json::json!({ "TenantIsolationMode": "PER_TENANT" });
        }
        let tags = condo_tags(&args);
        if !tags.is_empty() {
            body["Tags"] = tags.into();
        }
        call(
            &args.conn,
            "POST",
            "/2015-03-31/functions",
            None,
            &[],
            body.to_string().as_bytes(),
        )?
    } else if existing.status >= 300 {
        bail!("{}", existing.error());
    } else {
        let current = existing.json()?;
        let isolated =
            current["TenancyConfig"]["TenantIsolationMode"].as_str() == Some("PER_TENANT");
        if isolated != args.tenant_isolation {
            bail!(
                "{} already exists {} tenant isolation mode, which is fixed at creation; delete it first to change it",
                args.name,
                if isolated { "in" } else { "without" }
            );
        }
        let tags = condo_tags(&args);
        if !tags.is_empty() {
            let arn = current["FunctionArn"].as_str().unwrap_or(&args.name);
            let tags = serde_json::json!({ "Tags": tags });
            let tagged = call(
                &args.conn,
                "POST",
                &format!("/2017-03-31/tags/{}", encode_path(arn)),
                None,
                &[],
                tags.to_string().as_bytes(),
            )?;
            if tagged.status >= 300 {
                bail!("{}", tagged.error());
            }
        }
        let mut config = serde_json::json!({ "Runtime": args.runtime });
        if let Some(h) = &args.handler {
            config["Handler"] = h.clone().into();
        }
        if let Some(m) = args.memory {
            config["MemorySize"] = m.into();
        }
        if let Some(t) = args.timeout {
            config["Timeout"] = t.into();
        }
        let updated = call(
            &args.conn,
            "PUT",
            &format!("/2015-03-31/functions/{name_path}/configuration"),
            None,
            &[],
            config.to_string().as_bytes(),
        )?;
        if updated.status >= 300 {
            bail!("{}", updated.error());
        }
        let code = serde_json::json!({ "ZipFile": zip_b64 });
        call(
            &args.conn,
            "PUT",
            &format!("/2015-03-31/functions/{name_path}/code"),
            None,
            &[],
            code.to_string().as_bytes(),
        )?
    };
    if answer.status >= 300 {
        bail!("{}", answer.error());
    }
    let v = answer.json()?;
    println!(
        "deployed {} ({}, {} bytes, sha256 {})",
        v["FunctionName"].as_str().unwrap_or(""),
        v["Runtime"].as_str().unwrap_or(""),
        v["CodeSize"],
        v["CodeSha256"].as_str().unwrap_or("")
    );
    Ok(())
}

/// Zips a directory, keeping executable bits (a `provided` function's `bootstrap` needs one).
pub fn zip_dir(dir: &Path) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    for path in files {
        let rel = path.strip_prefix(dir)?.to_string_lossy().into_owned();
        let mode = std::fs::metadata(&path)?.permissions().mode();
        let options = zip::write::SimpleFileOptions::default()
            .unix_permissions(if mode & 0o111 != 0 { 0o755 } else { 0o644 });
        out.start_file(rel, options)?;
        out.write_all(&std::fs::read(&path)?)?;
    }
    Ok(out.finish()?.into_inner())
}
