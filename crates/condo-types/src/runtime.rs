//! Runtime identifiers (`python3.11`, `nodejs20.x`, `provided.al2023`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// A Lambda runtime identifier. Which of these a host can actually serve is decided at start-up
/// by whoever probes the host; this type only knows the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// `provided`, `provided.al2`, `provided.al2023`: a `bootstrap` executable in the code.
    Provided(ProvidedFlavour),
    /// `python3.<minor>`
    Python { minor: u8 },
    /// `nodejs<major>.x`
    Nodejs { major: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProvidedFlavour {
    Plain,
    Al2,
    Al2023,
}

/// The kind of runtime, which decides how an environment starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeFamily {
    Provided,
    Python,
    Nodejs,
}

impl Runtime {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let unknown = || {
            ValidationError::new(
                "runtime",
                value,
                "Member must satisfy enum value set: [provided, provided.al2, provided.al2023, python3.x, nodejsNN.x]",
            )
        };
        let runtime = match value {
            "provided" => Self::Provided(ProvidedFlavour::Plain),
            "provided.al2" => Self::Provided(ProvidedFlavour::Al2),
            "provided.al2023" => Self::Provided(ProvidedFlavour::Al2023),
            other => {
                if let Some(minor) = other.strip_prefix("python3.") {
                    Self::Python {
                        minor: small_number(minor).ok_or_else(unknown)?,
                    }
                } else if let Some(major) = other
                    .strip_prefix("nodejs")
                    .and_then(|s| s.strip_suffix(".x"))
                {
                    Self::Nodejs {
                        major: small_number(major).ok_or_else(unknown)?,
                    }
                } else {
                    return Err(unknown());
                }
            }
        };
        Ok(runtime)
    }

    pub fn family(&self) -> RuntimeFamily {
        match self {
            Self::Provided(_) => RuntimeFamily::Provided,
            Self::Python { .. } => RuntimeFamily::Python,
            Self::Nodejs { .. } => RuntimeFamily::Nodejs,
        }
    }
}

fn small_number(s: &str) -> Option<u8> {
    if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Provided(ProvidedFlavour::Plain) => f.write_str("provided"),
            Self::Provided(ProvidedFlavour::Al2) => f.write_str("provided.al2"),
            Self::Provided(ProvidedFlavour::Al2023) => f.write_str("provided.al2023"),
            Self::Python { minor } => write!(f, "python3.{minor}"),
            Self::Nodejs { major } => write!(f, "nodejs{major}.x"),
        }
    }
}

impl Serialize for Runtime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Runtime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Runtime::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_round_trip() {
        for name in [
            "provided",
            "provided.al2",
            "provided.al2023",
            "python3.11",
            "python3.13",
            "nodejs20.x",
            "nodejs24.x",
        ] {
            assert_eq!(Runtime::parse(name).unwrap().to_string(), name);
        }
        for bad in [
            "",
            "python",
            "python3.",
            "python3.x",
            "nodejs20",
            "java21",
            "nodejs.x",
            "python3.1234",
            "go1.x",
        ] {
            assert!(Runtime::parse(bad).is_err(), "{bad}");
        }
    }
}
