//! A function version's configuration and the bounded values inside it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    FunctionName, Limits, NetworkAccess, Runtime, TenancyConfig, ValidationError, Version,
};

macro_rules! bounded {
    ($(#[$doc:meta])* $name:ident, $member:literal, $min:expr, $max:expr, $default:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(u32);

        impl $name {
            pub const MIN: u32 = $min;
            pub const MAX: u32 = $max;

            pub fn new(value: i64) -> Result<Self, ValidationError> {
                if value < i64::from(Self::MIN) || value > i64::from(Self::MAX) {
                    return Err(ValidationError::new(
                        $member,
                        value.to_string(),
                        concat!("Member must have value between ", stringify!($min), " and ", stringify!($max)),
                    ));
                }
                Ok(Self(value as u32))
            }

            pub fn get(self) -> u32 {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self($default)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = i64::deserialize(d)?;
                $name::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

bounded!(
    /// `MemorySize` in MB: 128–10,240, default 128. Also the environment's memory limit.
    MemorySize, "memorySize", 128, 10240, 128
);
bounded!(
    /// `Timeout` in seconds: 1–900, default 3.
    Timeout, "timeout", 1, 900, 3
);
bounded!(
    /// `EphemeralStorage.Size` in MB: the size of the environment's `/tmp`, 512–10,240.
    TmpSize, "ephemeralStorage.size", 512, 10240, 512
);

/// `Environment.Variables`: keys `[a-zA-Z]([a-zA-Z0-9_])+`, 4 KB in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EnvironmentVariables(BTreeMap<String, String>);

impl EnvironmentVariables {
    pub fn new(vars: BTreeMap<String, String>) -> Result<Self, ValidationError> {
        let mut total = 0;
        for (key, value) in &vars {
            let mut bytes = key.bytes();
            let valid = key.len() >= 2
                && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(ValidationError::new(
                    "environment.variables",
                    key.clone(),
                    "Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+",
                ));
            }
            if value.contains('\0') {
                return Err(ValidationError::new(
                    "environment.variables",
                    key.clone(),
                    "Member must not contain NUL characters",
                ));
            }
            total += key.len() + value.len();
        }
        if total > Limits::ENVIRONMENT_BYTES {
            return Err(ValidationError::new(
                "environment.variables",
                format!("{total} bytes"),
                "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit",
            ));
        }
        Ok(Self(vars))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for EnvironmentVariables {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        EnvironmentVariables::new(raw).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Architecture {
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "arm64")]
    Arm64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LogFormat {
    #[default]
    Text,
    #[serde(rename = "JSON")]
    Json,
}

/// `LoggingConfig` as stored; the log group defaults to `/aws/lambda/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoggingConfig {
    pub log_format: LogFormat,
    pub application_log_level: Option<String>,
    pub system_log_level: Option<String>,
    pub log_group: Option<String>,
}

/// Everything that defines one version of a function. `$LATEST` changes; published versions
/// are frozen copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionConfig {
    pub name: FunctionName,
    pub version: Version,
    pub runtime: Runtime,
    pub handler: Option<String>,
    pub role: String,
    pub description: String,
    pub timeout: Timeout,
    pub memory: MemorySize,
    pub tmp_size: TmpSize,
    pub environment: EnvironmentVariables,
    pub architecture: Architecture,
    pub logging: LoggingConfig,
    pub tenancy: Option<TenancyConfig>,
    /// Set through the function's `condo:network` tag; frozen in published versions like
    /// every other setting.
    #[serde(default)]
    pub network: NetworkAccess,
    /// Hex SHA-256 of the ZIP: the code store's key.
    pub code_id: String,
    /// Base64 SHA-256 of the ZIP, as `CodeSha256` shows it.
    pub code_sha256: String,
    pub code_size: u64,
    /// ISO-8601 with milliseconds and offset, as `LastModified`.
    pub last_modified: String,
    pub revision_id: String,
}

impl FunctionConfig {
    pub fn is_per_tenant(&self) -> bool {
        self.tenancy.is_some()
    }

    pub fn log_group(&self) -> String {
        self.logging
            .log_group
            .clone()
            .unwrap_or_else(|| format!("/aws/lambda/{}", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(MemorySize::new(127).is_err());
        assert_eq!(MemorySize::new(128).unwrap().get(), 128);
        assert!(MemorySize::new(10241).is_err());
        assert!(Timeout::new(0).is_err());
        assert!(Timeout::new(901).is_err());
        assert_eq!(Timeout::default().get(), 3);
        assert!(TmpSize::new(511).is_err());
        assert!(serde_json::from_str::<MemorySize>("99999999999").is_err());
    }

    #[test]
    fn environment_variables() {
        let ok = |pairs: &[(&str, &str)]| {
            EnvironmentVariables::new(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
            .is_ok()
        };
        assert!(ok(&[("GREETING", "hi"), ("a1_b", "")]));
        assert!(!ok(&[("1ABC", "x")]));
        assert!(!ok(&[("A", "x")]));
        assert!(!ok(&[("A-B", "x")]));
        assert!(!ok(&[("BIG", &"x".repeat(5000))]));
        assert!(!ok(&[("NUL", "a\0b")]));
    }
}
