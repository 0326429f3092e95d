//! Function tags, and the condo settings that standard tools can only reach through a tag:
//! whether a function's environments may open connections to the outside, and how many
//! invocations one tenant may have in flight.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// A function's tags, as Lambda bounds them: at most 50, keys 1–128 characters, values up to
/// 256, and the `aws:` prefix reserved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Tags(BTreeMap<String, String>);

impl Tags {
    pub const MAX_TAGS: usize = 50;
    const MAX_KEY_CHARS: usize = 128;
    const MAX_VALUE_CHARS: usize = 256;

    pub fn new(tags: BTreeMap<String, String>) -> Result<Self, ValidationError> {
        let tags = Self(tags);
        tags.check()?;
        Ok(tags)
    }

    fn check(&self) -> Result<(), ValidationError> {
        if self.0.len() > Self::MAX_TAGS {
            return Err(ValidationError::new(
                "tags",
                format!("{} tags", self.0.len()),
                "Member must have at most 50 tags",
            ));
        }
        for (key, value) in &self.0 {
            let key_chars = key.chars().count();
            if key_chars == 0 || key_chars > Self::MAX_KEY_CHARS || key.contains('\0') {
                return Err(ValidationError::new(
                    "tags",
                    key.clone(),
                    "Tag keys must have length between 1 and 128",
                ));
            }
            if value.chars().count() > Self::MAX_VALUE_CHARS || value.contains('\0') {
                return Err(ValidationError::new(
                    "tags",
                    key.clone(),
                    "Tag values must have length between 0 and 256",
                ));
            }
        }
        Ok(())
    }

    /// What a well-formed set of tags may still not say: keys in the reserved `aws:` space,
    /// or a value of one of condo's own tags that condo does not know. Returns what condo's
    /// tags ask for.
    pub fn check_settable(&self) -> Result<TagSettings, String> {
        if let Some(key) = self
            .0
            .keys()
            .find(|k| k.to_ascii_lowercase().starts_with("aws:"))
        {
            return Err(format!(
                "Tag key {key}: keys starting with aws: are reserved for AWS use"
            ));
        }
        Ok(TagSettings {
            network: NetworkAccess::from_tags(self)?,
            tenant_max_concurrency: tenant_max_concurrency(self)?,
        })
    }

    /// These tags with `other` added (replacing values of the same keys), validated again.
    pub fn merged(&self, other: &Tags) -> Result<Tags, ValidationError> {
        let mut next = self.0.clone();
        next.extend(other.0.iter().map(|(k, v)| (k.clone(), v.clone())));
        Tags::new(next)
    }

    /// These tags without `keys`.
    pub fn without<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Tags {
        let mut next = self.0.clone();
        for key in keys {
            next.remove(key);
        }
        Tags(next)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        // The constraint alone: the API layer names the member and the value.
        Tags::new(raw).map_err(|e| serde::de::Error::custom(e.constraint))
    }
}

/// What condo's own tags ask of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TagSettings {
    pub network: NetworkAccess,
    /// Invocations one tenant may have in flight at once (tenant isolation mode only).
    pub tenant_max_concurrency: Option<u32>,
}

/// The tag that caps one tenant's invocations in flight: a whole number from 1 to
/// [`MAX_TENANT_CONCURRENCY`]. Without it a tenant may use all of the function's concurrency.
pub const TENANT_CONCURRENCY_TAG: &str = "condo:tenant-max-concurrency";
pub const MAX_TENANT_CONCURRENCY: u32 = 1000;

fn tenant_max_concurrency(tags: &Tags) -> Result<Option<u32>, String> {
    let Some(value) = tags.get(TENANT_CONCURRENCY_TAG) else {
        return Ok(None);
    };
    match value.parse::<u32>() {
        Ok(n) if (1..=MAX_TENANT_CONCURRENCY).contains(&n) && !value.starts_with('+') => {
            Ok(Some(n))
        }
        _ => Err(format!(
            "The {TENANT_CONCURRENCY_TAG} tag must be a whole number from 1 to {MAX_TENANT_CONCURRENCY}, not {value}"
        )),
    }
}

/// What an environment's network namespace can reach besides its own loopback (where its
/// Runtime API listens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkAccess {
    /// Nothing: the namespace has a loopback interface and no route anywhere.
    #[default]
    None,
    /// Connections to the outside, made on the environment's behalf by a user-mode network
    /// helper. The host's loopback services and other environments stay out of reach.
    Outbound,
}

impl NetworkAccess {
    /// The tag that sets a function's network access: `condo:network` = `none` | `outbound`.
    pub const TAG: &'static str = "condo:network";

    fn from_tags(tags: &Tags) -> Result<Self, String> {
        match tags.get(Self::TAG) {
            None | Some("none") => Ok(Self::None),
            Some("outbound") => Ok(Self::Outbound),
            Some(other) => Err(format!(
                "The {} tag must be none or outbound, not {other}",
                Self::TAG
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Result<Tags, ValidationError> {
        Tags::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn bounds() {
        assert!(tags(&[("team", "a"), ("empty", "")]).is_ok());
        assert!(tags(&[("", "x")]).is_err());
        assert!(tags(&[(&"k".repeat(129), "x")]).is_err());
        assert!(tags(&[("k", &"v".repeat(257))]).is_err());
        assert!(tags(&[("aws:cloudformation", "x")])
            .unwrap()
            .check_settable()
            .is_err());
        assert!(tags(&[("AWS:x", "x")]).unwrap().check_settable().is_err());
        let many: Vec<(String, String)> =
            (0..51).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(Tags::new(many.into_iter().collect()).is_err());
    }

    fn network(t: &Tags) -> Result<NetworkAccess, String> {
        t.check_settable().map(|s| s.network)
    }

    #[test]
    fn network_tag() {
        let none = tags(&[]).unwrap();
        assert_eq!(network(&none), Ok(NetworkAccess::None));
        let on = tags(&[("condo:network", "outbound")]).unwrap();
        assert_eq!(network(&on), Ok(NetworkAccess::Outbound));
        assert!(tags(&[("condo:network", "yes")])
            .unwrap()
            .check_settable()
            .is_err());
        let off = on.without(["condo:network"]);
        assert_eq!(network(&off), Ok(NetworkAccess::None));
        assert!(none.merged(&tags(&[("x", "y")]).unwrap()).is_ok());
    }

    #[test]
    fn tenant_concurrency_tag() {
        let cap = |v: &str| {
            tags(&[(TENANT_CONCURRENCY_TAG, v)])
                .unwrap()
                .check_settable()
                .map(|s| s.tenant_max_concurrency)
        };
        assert_eq!(cap("1"), Ok(Some(1)));
        assert_eq!(cap("1000"), Ok(Some(1000)));
        for bad in ["0", "1001", "-1", "+2", "two", "", " 3", "4294967296"] {
            assert!(cap(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            tags(&[]).unwrap().check_settable(),
            Ok(TagSettings::default())
        );
    }
}
