//! Function names, versions, qualifiers and ARNs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// A bare function name: 1–64 characters of `[a-zA-Z0-9-_]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct FunctionName(String);

impl FunctionName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        if value.is_empty() || value.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                "functionName",
                value,
                "Member must have length between 1 and 64",
            ));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ValidationError::new(
                "functionName",
                value,
                "Member must satisfy regular expression pattern: [a-zA-Z0-9-_]+",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for FunctionName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        FunctionName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A version of a function: the mutable `$LATEST` or an immutable published number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    Latest,
    Published(u32),
}

impl Version {
    pub const LATEST: &'static str = "$LATEST";

    pub fn parse(value: &str) -> Option<Self> {
        if value == Self::LATEST {
            return Some(Self::Latest);
        }
        if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        match value.parse::<u32>() {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(Self::Published(n)),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str(Self::LATEST),
            Self::Published(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Version::parse(&raw).ok_or_else(|| serde::de::Error::custom("invalid version"))
    }
}

/// What a request's qualifier names: a version, or an alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Qualifier {
    Version(Version),
    Alias(String),
}

impl Qualifier {
    /// The model's `Qualifier`: 1–128 characters, `$LATEST` or `[a-zA-Z0-9-_$]+`.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        if value.is_empty() || value.len() > 128 {
            return Err(ValidationError::new(
                "qualifier",
                value,
                "Member must have length between 1 and 128",
            ));
        }
        if let Some(version) = Version::parse(value) {
            return Ok(Self::Version(version));
        }
        let valid = value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !value.bytes().all(|b| b.is_ascii_digit());
        if !valid {
            return Err(ValidationError::new(
                "qualifier",
                value,
                "Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)",
            ));
        }
        Ok(Self::Alias(value.to_owned()))
    }
}

impl fmt::Display for Qualifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Version(v) => v.fmt(f),
            Self::Alias(a) => f.write_str(a),
        }
    }
}

/// A function as a request names it: a name, a partial ARN or a full ARN, with an optional
/// qualifier suffix (`name:3`, `arn:aws:lambda:us-east-1:123456789012:function:name:$LATEST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: FunctionName,
    pub qualifier: Option<Qualifier>,
    /// The account named in an ARN, checked by the caller against its own account.
    pub account: Option<String>,
    pub region: Option<String>,
}

impl FunctionRef {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let invalid = || {
            ValidationError::new(
                "functionName",
                value,
                "Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:)?(\\d{12}:)?(function:)?([a-zA-Z0-9-_\\.]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?",
            )
        };
        if value.is_empty() || value.len() > 256 {
            return Err(ValidationError::new(
                "functionName",
                value,
                "Member must have length between 1 and 256",
            ));
        }
        let parts: Vec<&str> = value.split(':').collect();
        let (account, region, name, qualifier) = match parts.as_slice() {
            [name] => (None, None, *name, None),
            [name, q] => (None, None, *name, Some(*q)),
            [acct, "function", name] => (Some(*acct), None, *name, None),
            [acct, "function", name, q] => (Some(*acct), None, *name, Some(*q)),
            ["arn", partition, "lambda", region, acct, "function", name]
                if partition.starts_with("aws") =>
            {
                (Some(*acct), Some(*region), *name, None)
            }
            ["arn", partition, "lambda", region, acct, "function", name, q]
                if partition.starts_with("aws") =>
            {
                (Some(*acct), Some(*region), *name, Some(*q))
            }
            _ => return Err(invalid()),
        };
        if let Some(acct) = account {
            if acct.len() != 12 || !acct.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
        }
        let name = FunctionName::parse(name).map_err(|_| invalid())?;
        let qualifier = qualifier.map(Qualifier::parse).transpose()?;
        Ok(Self {
            name,
            qualifier,
            account: account.map(str::to_owned),
            region: region.map(str::to_owned),
        })
    }
}

/// ARNs condo hands out. The account and region are the server's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn;

impl Arn {
    pub fn function(region: &str, account: &str, name: &FunctionName) -> String {
        format!("arn:aws:lambda:{region}:{account}:function:{name}")
    }

    pub fn qualified_function(
        region: &str,
        account: &str,
        name: &FunctionName,
        qualifier: &impl fmt::Display,
    ) -> String {
        format!("arn:aws:lambda:{region}:{account}:function:{name}:{qualifier}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Option<(&str, Option<&str>, Option<&str>)>) {
        let got = FunctionRef::parse(input).ok().map(|r| {
            (
                r.name.to_string(),
                r.qualifier.map(|q| q.to_string()),
                r.account,
            )
        });
        let expect =
            expect.map(|(n, q, a)| (n.to_owned(), q.map(str::to_owned), a.map(str::to_owned)));
        assert_eq!(got, expect, "input {input:?}");
    }

    #[test]
    fn function_refs() {
        check("counter", Some(("counter", None, None)));
        check("counter:$LATEST", Some(("counter", Some("$LATEST"), None)));
        check("counter:7", Some(("counter", Some("7"), None)));
        check("counter:live", Some(("counter", Some("live"), None)));
        check(
            "123456789012:function:counter",
            Some(("counter", None, Some("123456789012"))),
        );
        check(
            "arn:aws:lambda:us-east-1:123456789012:function:counter:3",
            Some(("counter", Some("3"), Some("123456789012"))),
        );
        check("", None);
        check("a/b", None);
        check("counter:", None);
        check("arn:aws:s3:::bucket", None);
        check("12345:function:counter", None);
        check(&"x".repeat(65), None);
        check("counter:bad#q", None);
    }

    #[test]
    fn versions() {
        assert_eq!(Version::parse("$LATEST"), Some(Version::Latest));
        assert_eq!(Version::parse("12"), Some(Version::Published(12)));
        assert_eq!(Version::parse("0"), None);
        assert_eq!(Version::parse("99999999999"), None);
        assert_eq!(Version::parse("latest"), None);
        assert_eq!(Version::Published(3).to_string(), "3");
    }
}
