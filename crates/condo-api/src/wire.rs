//! Lambda's JSON shapes: requests as they arrive, configurations as botocore expects them.

use std::collections::BTreeMap;

use condo_engine::{Engine, FunctionSettings};
use condo_types::{
    Architecture, EnvironmentVariables, FunctionConfig, LogFormat, LoggingConfig, MemorySize,
    Runtime, Tags, TenancyConfig, Timeout, TmpSize, Version,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;

/// Parses a JSON body into `T`, with AWS's error types: malformed JSON is
/// `InvalidRequestContentException`, a value that breaks a constraint is `ValidationException`.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    // Syntax first, then shape: going through a Value keeps the two kinds of error apart even
    // where serde buffers content (flattened members).
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid_content(
            "Could not parse request body into json: ".to_owned() + &strip_position(&e.to_string()),
        )
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = strip_position(&e.into_inner().to_string());
        if path.is_empty() || path == "." {
            ApiError::validation(inner)
        } else {
            ApiError::validation(format!("1 validation error detected: Value at '{path}' failed to satisfy constraint: {inner}"))
        }
    })
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct EnvironmentWire {
    pub variables: Option<EnvironmentVariables>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct EphemeralStorageWire {
    pub size: TmpSize,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct LoggingConfigWire {
    pub log_format: Option<LogFormat>,
    pub application_log_level: Option<String>,
    pub system_log_level: Option<String>,
    pub log_group: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct CodeWire {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    #[serde(rename = "S3Key")]
    pub s3_key: Option<String>,
    pub image_uri: Option<String>,
}

/// The settable members shared by CreateFunction and UpdateFunctionConfiguration.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct SettingsWire {
    /// Kept as text so an unknown runtime is answered with the list this host serves.
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub role: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<Timeout>,
    pub memory_size: Option<MemorySize>,
    pub environment: Option<EnvironmentWire>,
    pub ephemeral_storage: Option<EphemeralStorageWire>,
    pub architectures: Option<Vec<Architecture>>,
    pub logging_config: Option<LoggingConfigWire>,
    pub package_type: Option<String>,
    pub layers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFunctionWire {
    pub function_name: String,
    pub code: Option<CodeWire>,
    #[serde(default)]
    pub publish: bool,
    pub tenancy_config: Option<TenancyConfig>,
    #[serde(default)]
    pub tags: Tags,
    #[serde(flatten)]
    pub settings: SettingsWire,
}

impl SettingsWire {
    /// Checks the members whose rules serde cannot express, and builds the engine's settings.
    pub fn into_settings(
        self,
        current_logging: Option<&LoggingConfig>,
        function: &str,
        supported_runtimes: &[String],
    ) -> Result<FunctionSettings, ApiError> {
        let runtime = self
            .runtime
            .as_deref()
            .map(|r| {
                Runtime::parse(r).map_err(|_| {
                    ApiError::invalid_parameter(format!(
                        "The runtime parameter of {r} is not supported on this host. Supported runtimes: {}",
                        supported_runtimes.join(", ")
                    ))
                })
            })
            .transpose()?;
        if let Some(h) = &self.handler {
            if h.len() > 128 || h.chars().any(char::is_whitespace) {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{h}' at 'handler' failed to satisfy constraint: Member must satisfy regular expression pattern: [^\\s]+ and have length at most 128"
                )));
            }
        }
        if let Some(d) = &self.description {
            if d.chars().count() > 256 {
                return Err(ApiError::validation("1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length less than or equal to 256"));
            }
        }
        if let Some(role) = &self.role {
            if !role.starts_with("arn:")
                || !role.contains(":iam::")
                || !role.contains(":role/")
                || role.len() > 2048
            {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{role}' at 'role' failed to satisfy constraint: Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\\d{{12}}:role/?[a-zA-Z_0-9+=,.@\\-_/]+"
                )));
            }
        }
        if self.package_type.as_deref().is_some_and(|p| p != "Zip") {
            return Err(ApiError::invalid_parameter(
                "condo runs ZIP packages only (PackageType: Zip).",
            ));
        }
        if self.layers.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(ApiError::invalid_parameter(
                "Layers are not supported by condo yet.",
            ));
        }
        let architecture = match self.architectures {
            None => None,
            Some(list) if list.len() == 1 => Some(list[0]),
            Some(_) => {
                return Err(ApiError::validation(
                    "1 validation error detected: Value at 'architectures' failed to satisfy constraint: Member must have length less than or equal to 1",
                ))
            }
        };
        if architecture == Some(Architecture::Arm64) && cfg!(target_arch = "x86_64") {
            return Err(ApiError::invalid_parameter(
                "This host runs x86_64 functions only.",
            ));
        }
        let logging = match self.logging_config {
            None => None,
            Some(wire) => {
                let mut l = current_logging.cloned().unwrap_or_default();
                if let Some(f) = wire.log_format {
                    l.log_format = f;
                }
                if let Some(level) = wire.application_log_level {
                    check_level(
                        &level,
                        &["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"],
                        "applicationLogLevel",
                    )?;
                    l.application_log_level = Some(level);
                }
                if let Some(level) = wire.system_log_level {
                    check_level(&level, &["DEBUG", "INFO", "WARN"], "systemLogLevel")?;
                    l.system_log_level = Some(level);
                }
                if let Some(group) = wire.log_group {
                    let valid = !group.is_empty()
                        && group.len() <= 512
                        && group
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b".-_/#".contains(&b));
                    if !valid {
                        return Err(ApiError::validation(format!(
                            "1 validation error detected: Value '{group}' at 'loggingConfig.logGroup' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+"
                        )));
                    }
                    l.log_group = Some(group);
                }
                if l.log_format == LogFormat::Text
                    && (l.application_log_level.is_some() || l.system_log_level.is_some())
                {
                    return Err(ApiError::invalid_parameter(format!(
                        "Log levels can only be set for functions with LogFormat JSON ({function})."
                    )));
                }
                Some(l)
            }
        };
        Ok(FunctionSettings {
            runtime,
            handler: self.handler,
            role: self.role,
            description: self.description,
            timeout: self.timeout,
            memory: self.memory_size,
            tmp_size: self.ephemeral_storage.map(|e| e.size),
            environment: self.environment.map(|e| e.variables.unwrap_or_default()),
            architecture,
            logging,
        })
    }
}

fn check_level(level: &str, allowed: &[&str], member: &str) -> Result<(), ApiError> {
    if allowed.contains(&level) {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "1 validation error detected: Value '{level}' at 'loggingConfig.{member}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        )))
    }
}

/// `FunctionConfiguration` as the model defines it.
pub fn configuration(engine: &Engine, c: &FunctionConfig) -> Value {
    let arn = engine.function_arn(&c.name);
    let function_arn = match c.version {
        Version::Latest => arn,
        v => format!("{arn}:{v}"),
    };
    let variables: BTreeMap<&String, &String> = c.environment.iter().collect();
    let mut v = json!({
        "FunctionName": c.name.as_str(),
        "FunctionArn": function_arn,
        "Runtime": c.runtime.to_string(),
        "Role": c.role,
        "Handler": c.handler,
        "CodeSize": c.code_size,
        "Description": c.description,
        "Timeout": c.timeout.get(),
        "MemorySize": c.memory.get(),
        "LastModified": c.last_modified,
        "CodeSha256": c.code_sha256,
        "Version": c.version.to_string(),
        "TracingConfig": { "Mode": "PassThrough" },
        "RevisionId": c.revision_id,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": [match c.architecture { Architecture::X86_64 => "x86_64", Architecture::Arm64 => "arm64" }],
        "EphemeralStorage": { "Size": c.tmp_size.get() },
        "SnapStart": { "ApplyOn": "None", "OptimizationStatus": "Off" },
        "LoggingConfig": {
            "LogFormat": match c.logging.log_format { LogFormat::Text => "Text", LogFormat::Json => "JSON" },
            "LogGroup": c.log_group(),
        },
    });
    if c.handler.is_none() {
        if let Some(obj) = v.as_object_mut() {
            obj.remove("Handler");
        }
    }
    if !c.environment.is_empty() {
        v["Environment"] = json!({ "Variables": variables });
    }
    if let Some(level) = &c.logging.application_log_level {
        v["LoggingConfig"]["ApplicationLogLevel"] = level.clone().into();
    }
    if let Some(level) = &c.logging.system_log_level {
        v["LoggingConfig"]["SystemLogLevel"] = level.clone().into();
    }
    if let Some(t) = &c.tenancy {
        v["TenancyConfig"] = serde_json::to_value(t).unwrap_or(Value::Null);
    }
    v
}
