//! Control-plane operations: functions, versions, concurrency, account settings, code download.

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use condo_engine::{ConfigurationUpdate, CreateFunction};
use condo_types::{FunctionName, FunctionRef, Limits, Qualifier, Tags};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::wire::{configuration, parse_body, CodeWire, CreateFunctionWire, SettingsWire};
use crate::{sigv4, AppState};

/// Resolves `{FunctionName}` plus an optional `Qualifier` query parameter.
pub(crate) fn function_ref(
    state: &AppState,
    raw: &str,
    qualifier: Option<&str>,
) -> Result<(FunctionName, Option<Qualifier>), ApiError> {
    let r = FunctionRef::parse(raw)?;
    if let Some(account) = &r.account {
        if account != state.engine.account_id() {
            return Err(ApiError::not_found(format!("Function not found: {raw}")));
        }
    }
    let query = qualifier.map(Qualifier::parse).transpose()?;
    let qualifier = match (r.qualifier, query) {
        (Some(a), Some(b)) if a != b => return Err(ApiError::invalid_parameter(
            "The derived qualifier from the function name does not match the specified qualifier.",
        )),
        (a, b) => a.or(b),
    };
    Ok((r.name, qualifier))
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct QualifierQuery {
    pub qualifier: Option<String>,
}

fn decode_zip(code: Option<CodeWire>) -> Result<Vec<u8>, ApiError> {
    let code = code.unwrap_or_default();
    if code.s3_bucket.is_some() || code.s3_key.is_some() || code.image_uri.is_some() {
        return Err(ApiError::invalid_parameter(
            "condo accepts code as Code.ZipFile only (S3 locations and container images are not supported).",
        ));
    }
    let b64 = code.zip_file.ok_or_else(|| {
        ApiError::invalid_parameter("Please provide a source for function code (Code.ZipFile).")
    })?;
    let zip = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| ApiError::invalid_parameter("Code.ZipFile is not valid base64."))?;
    if zip.len() > Limits::ZIP_BYTES {
        return Err(ApiError::too_large(format!(
            "Request must be smaller than {} bytes for the CreateFunction operation",
            Limits::ZIP_BYTES
        )));
    }
    Ok(zip)
}

pub(crate) async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let wire: CreateFunctionWire = parse_body(&body)?;
    let name = FunctionName::parse(&wire.function_name)?;
    let zip = decode_zip(wire.code)?;
    let settings =
        wire.settings
            .into_settings(None, name.as_str(), &state.engine.runtimes().supported())?;
    let config = state
        .engine
        .create_function(CreateFunction {
            name,
            settings,
            tenancy: wire.tenancy_config,
            tags: wire.tags,
            zip,
            publish: wire.publish,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(configuration(&state.engine, &config)),
    )
        .into_response())
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Path(function): Path<String>,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (name, qualifier) = function_ref(&state, &function, q.qualifier.as_deref())?;
    let config = state.engine.function(&name, qualifier.as_ref())?;
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let path = format!("/condo/code/{}", config.code_id);
    let creds = sigv4::Credentials {
        access_key_id: state.credentials.access_key_id.clone(),
        secret_access_key: state.credentials.secret_access_key.clone(),
    };
    let query = sigv4::presign(
        "GET",
        &path,
        None,
        host,
        &creds,
        state.engine.region(),
        "lambda",
        chrono::Utc::now(),
        600,
    );
    let mut out = json!({
        "Configuration": configuration(&state.engine, &config),
        "Code": { "RepositoryType": "S3", "Location": format!("http://{host}{path}?{query}") },
        "Tags": state.engine.tags(&name)?,
    });
    if let Some(n) = state.engine.reserved_concurrency(&name)? {
        out["Concurrency"] = json!({ "ReservedConcurrentExecutions": n });
    }
    Ok(Json(out))
}

/// The function a tagging call names: its ARN (or name), never a version or alias.
fn tagged_function(state: &AppState, resource: &str) -> Result<FunctionName, ApiError> {
    let (name, qualifier) = function_ref(state, resource, None)?;
    if qualifier.is_some() {
        return Err(ApiError::invalid_parameter(
            "Tags apply to a function, not to one of its versions or aliases: use the unqualified function ARN.",
        ));
    }
    Ok(name)
}

pub(crate) async fn list_tags(
    State(state): State<AppState>,
    Path(resource): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = tagged_function(&state, &resource)?;
    Ok(Json(json!({ "Tags": state.engine.tags(&name)? })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TagResourceWire {
    tags: Tags,
}

pub(crate) async fn tag_resource(
    State(state): State<AppState>,
    Path(resource): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let name = tagged_function(&state, &resource)?;
    let wire: TagResourceWire = parse_body(&body)?;
    state.engine.tag_function(&name, &wire.tags)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn untag_resource(
    State(state): State<AppState>,
    Path(resource): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    let name = tagged_function(&state, &resource)?;
    let keys: Vec<String> = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == "tagKeys")
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    if keys.is_empty() {
        return Err(ApiError::invalid_parameter(
            "1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: Member must not be null",
        ));
    }
    state.engine.untag_function(&name, &keys)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn download_code(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let path = state
        .engine
        .code_store()
        .zip_path(&code)
        .ok_or_else(|| ApiError::not_found("No such code package"))?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::not_found("No such code package"))?;
    Ok(([("content-type", "application/zip")], bytes).into_response())
}

pub(crate) async fn get_configuration(
    State(state): State<AppState>,
    Path(function): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> Result<Json<Value>, ApiError> {
    let (name, qualifier) = function_ref(&state, &function, q.qualifier.as_deref())?;
    let config = state.engine.function(&name, qualifier.as_ref())?;
    Ok(Json(configuration(&state.engine, &config)))
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListQuery {
    pub marker: Option<String>,
    pub max_items: Option<String>,
    pub function_version: Option<String>,
}

fn page_size(max_items: Option<&str>) -> Result<usize, ApiError> {
    match max_items {
        None => Ok(50),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(n.min(50)),
            _ => Err(ApiError::validation(format!(
                "1 validation error detected: Value '{s}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 10000"
            ))),
        },
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = page_size(q.max_items.as_deref())?;
    let all_versions = match q.function_version.as_deref() {
        None => false,
        Some("ALL") => true,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'functionVersion' failed to satisfy constraint: Member must satisfy enum value set: [ALL]"
            )))
        }
    };
    let page = state
        .engine
        .list_functions(q.marker.as_deref(), limit + 1)?;
    let more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let mut functions = Vec::new();
    for latest in page {
        if all_versions {
            for v in state.engine.list_versions(&latest.name)? {
                functions.push(configuration(&state.engine, &v));
            }
        } else {
            functions.push(configuration(&state.engine, latest));
        }
    }
    let mut out = json!({ "Functions": functions });
    if more {
        if let Some(last) = page.last() {
            out["NextMarker"] = last.name.to_string().into();
        }
    }
    Ok(Json(out))
}

pub(crate) async fn list_versions(
    State(state): State<AppState>,
    Path(function): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let (name, _) = function_ref(&state, &function, None)?;
    let limit = page_size(q.max_items.as_deref())?;
    let versions = state.engine.list_versions(&name)?;
    let start = match q.marker.as_deref() {
        None => 0,
        Some(m) => versions
            .iter()
            .position(|v| v.version.to_string() == m)
            .map_or(versions.len(), |i| i + 1),
    };
    let page: Vec<Value> = versions
        .iter()
        .skip(start)
        .take(limit)
        .map(|v| configuration(&state.engine, v))
        .collect();
    let mut out = json!({ "Versions": page });
    if start + limit < versions.len() {
        if let Some(last) = versions.get(start + limit - 1) {
            out["NextMarker"] = last.version.to_string().into();
        }
    }
    Ok(Json(out))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(function): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> Result<StatusCode, ApiError> {
    let (name, qualifier) = function_ref(&state, &function, q.qualifier.as_deref())?;
    state.engine.delete_function(&name, qualifier.as_ref())?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateCodeWire {
    zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    s3_bucket: Option<String>,
    #[serde(rename = "S3Key")]
    s3_key: Option<String>,
    image_uri: Option<String>,
    #[serde(default)]
    publish: bool,
    revision_id: Option<String>,
}

pub(crate) async fn update_code(
    State(state): State<AppState>,
    Path(function): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (name, _) = function_ref(&state, &function, None)?;
    let wire: UpdateCodeWire = parse_body(&body)?;
    let zip = decode_zip(Some(CodeWire {
        zip_file: wire.zip_file,
        s3_bucket: wire.s3_bucket,
        s3_key: wire.s3_key,
        image_uri: wire.image_uri,
    }))?;
    let config = state
        .engine
        .update_code(&name, zip, wire.publish, wire.revision_id.as_deref())
        .await?;
    Ok(Json(configuration(&state.engine, &config)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateConfigurationWire {
    revision_id: Option<String>,
    #[serde(flatten)]
    settings: SettingsWire,
}

pub(crate) async fn update_configuration(
    State(state): State<AppState>,
    Path(function): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (name, _) = function_ref(&state, &function, None)?;
    // TenancyConfig is fixed at creation. The AWS clients cannot even send it here; a raw
    // request that tries gets a clear refusal rather than a silent ignore.
    let raw: Value = parse_body(&body)?;
    if raw.get("TenancyConfig").is_some() {
        return Err(condo_engine::EngineError::TenancyImmutable.into());
    }
    let wire: UpdateConfigurationWire = parse_body(&body)?;
    let current = state.engine.function(&name, None)?;
    let settings = wire.settings.into_settings(
        Some(&current.logging),
        name.as_str(),
        &state.engine.runtimes().supported(),
    )?;
    let config = state
        .engine
        .update_configuration(
            &name,
            ConfigurationUpdate {
                settings,
                revision_id: wire.revision_id,
            },
        )
        .await?;
    Ok(Json(configuration(&state.engine, &config)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublishWire {
    description: Option<String>,
    revision_id: Option<String>,
    code_sha256: Option<String>,
}

pub(crate) async fn publish_version(
    State(state): State<AppState>,
    Path(function): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (name, _) = function_ref(&state, &function, None)?;
    let wire: PublishWire = parse_body(&body)?;
    if let Some(sha) = &wire.code_sha256 {
        let latest = state.engine.function(&name, None)?;
        if &latest.code_sha256 != sha {
            return Err(ApiError::invalid_parameter(format!(
                "CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST ({}). Please try again with the CodeSHA256 in $LATEST.",
                latest.code_sha256
            )));
        }
    }
    let config = state
        .engine
        .publish_version(&name, wire.description, wire.revision_id.as_deref())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(configuration(&state.engine, &config)),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConcurrencyWire {
    reserved_concurrent_executions: i64,
}

pub(crate) async fn put_concurrency(
    State(state): State<AppState>,
    Path(function): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (name, _) = function_ref(&state, &function, None)?;
    let wire: ConcurrencyWire = parse_body(&body)?;
    let n = u32::try_from(wire.reserved_concurrent_executions).map_err(|_| {
        ApiError::validation("1 validation error detected: Value at 'reservedConcurrentExecutions' failed to satisfy constraint: Member must have value greater than or equal to 0")
    })?;
    state.engine.set_reserved_concurrency(&name, Some(n))?;
    Ok(Json(json!({ "ReservedConcurrentExecutions": n })))
}

pub(crate) async fn get_concurrency(
    State(state): State<AppState>,
    Path(function): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (name, _) = function_ref(&state, &function, None)?;
    Ok(Json(match state.engine.reserved_concurrency(&name)? {
        Some(n) => json!({ "ReservedConcurrentExecutions": n }),
        None => json!({}),
    }))
}

pub(crate) async fn delete_concurrency(
    State(state): State<AppState>,
    Path(function): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (name, _) = function_ref(&state, &function, None)?;
    state.engine.set_reserved_concurrency(&name, None)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn account_settings(
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let mut count = 0u64;
    let mut total = 0u64;
    let mut after: Option<String> = None;
    loop {
        let page = state.engine.list_functions(after.as_deref(), 500)?;
        let Some(last) = page.last() else { break };
        after = Some(last.name.to_string());
        for f in &page {
            count += 1;
            total += f.code_size;
        }
    }
    Ok(Json(json!({
        "AccountLimit": {
            "TotalCodeSize": 80u64 * 1024 * 1024 * 1024,
            "CodeSizeUnzipped": Limits::UNZIPPED_BYTES,
            "CodeSizeZipped": Limits::ZIP_BYTES,
            "ConcurrentExecutions": state.engine.limits().account_concurrency,
            "UnreservedConcurrentExecutions": state.engine.unreserved_concurrency(),
        },
        "AccountUsage": { "TotalCodeSize": total, "FunctionCount": count },
    })))
}
