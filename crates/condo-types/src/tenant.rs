//! Tenant ids and the tenancy configuration of a function.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// A tenant id as the Invoke API accepts it: 1–256 characters of `[a-zA-Z0-9._:/=+\-@ ]`.
///
/// The AWS clients check only the minimum length, so this is the only real guard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    pub const MAX_LEN: usize = 256;
    const PATTERN: &'static str =
        "Member must satisfy regular expression pattern: [a-zA-Z0-9\\._:\\/=+\\-@ ]+";

    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        if value.is_empty() || value.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                "tenantId",
                value,
                "Member must have length between 1 and 256",
            ));
        }
        if !value.bytes().all(Self::allowed) {
            return Err(ValidationError::new("tenantId", value, Self::PATTERN));
        }
        Ok(Self(value.to_owned()))
    }

    fn allowed(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b".:/=+-@_ ".contains(&b)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        TenantId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `TenantIsolationMode`: the model's enum has the single value `PER_TENANT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantIsolationMode {
    #[serde(rename = "PER_TENANT")]
    PerTenant,
}

/// `TenancyConfig`, chosen at CreateFunction and immutable afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenancyConfig {
    #[serde(rename = "TenantIsolationMode")]
    pub tenant_isolation_mode: TenantIsolationMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, ok: bool) {
        assert_eq!(TenantId::parse(input).is_ok(), ok, "tenant id {input:?}");
    }

    #[test]
    fn tenant_id_follows_the_model() {
        check("BlueTenant", true);
        check("Blue Tenant:1", true);
        check("a.b_c:d/e=f+g-h@i j", true);
        check(&"x".repeat(256), true);
        check("", false);
        check(&"x".repeat(257), false);
        check("bad#id", false);
        check("tab\there", false);
        check("new\nline", false);
        check("ünïcode", false);
        check("semi;colon", false);
    }

    #[test]
    fn error_names_the_member_and_truncates_huge_values() {
        let err = TenantId::parse(&"#".repeat(10_000)).unwrap_err();
        assert_eq!(err.member, "tenantId");
        assert!(err.to_string().len() < 700);
    }

    #[test]
    fn tenancy_config_wire_shape() {
        let parsed: TenancyConfig =
            serde_json::from_str(r#"{"TenantIsolationMode":"PER_TENANT"}"#).unwrap();
        assert_eq!(parsed.tenant_isolation_mode, TenantIsolationMode::PerTenant);
        assert!(
            serde_json::from_str::<TenancyConfig>(r#"{"TenantIsolationMode":"SHARED"}"#).is_err()
        );
    }
}
