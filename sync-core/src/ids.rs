//! Identifier newtypes. Ids are never bare strings in the API, so a place can't be passed where a
//! record is expected, and each id parses with its own clear error.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::IdError;

/// The id of one record (one Automerge document): a UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordId(uuid::Uuid);

impl RecordId {
    /// A fresh id: a UUIDv7, its time first, so that records created together sit together in
    /// the server's indexes keyed by id (a commit then writes a few index pages, not one per
    /// record). The rest is random; the time it shows is the record's `created_at` anyway.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
    /// The 16 raw bytes (the wire form).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
    /// From the 16 raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }
}

impl Default for RecordId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({self})")
    }
}

impl FromStr for RecordId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        uuid::Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| IdError::Record(s.to_string()))
    }
}

/// A node of the place tree, written as its path from the root: `hz/baiyang/haitian/haitiancheng/b3`.
///
/// Paths make "a grant on a node covers everything below it" a prefix test.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PlaceId(String);

impl PlaceId {
    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// True when `self` is `other` or lies below it.
    pub fn is_within(&self, other: &PlaceId) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
    /// The parent node, `None` at the root of the tree.
    pub fn parent(&self) -> Option<PlaceId> {
        self.0.rsplit_once('/').map(|(p, _)| PlaceId(p.to_string()))
    }
    /// How deep in the tree: the root level is 1.
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }
}

impl FromStr for PlaceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 200
            && s.split('/').all(|seg| {
                !seg.is_empty()
                    && seg.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    })
            });
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(IdError::Place(s.to_string()))
        }
    }
}

impl TryFrom<String> for PlaceId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

impl From<PlaceId> for String {
    fn from(p: PlaceId) -> String {
        p.0
    }
}

impl fmt::Display for PlaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PlaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlaceId({})", self.0)
    }
}

/// The id of a phone (an install of the device SDK): a UUID chosen by the phone.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(uuid::Uuid);

impl DeviceId {
    /// A fresh random id. (Devices are few and index nothing large: no reason to show when a
    /// phone was set up.)
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl Default for DeviceId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

impl FromStr for DeviceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        uuid::Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| IdError::Device(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_containment_is_by_whole_segments() {
        let street: PlaceId = "hz/baiyang".parse().unwrap();
        let estate: PlaceId = "hz/baiyang/haitian/haitiancheng".parse().unwrap();
        let other: PlaceId = "hz/baiyangx".parse().unwrap();
        assert!(estate.is_within(&street));
        assert!(street.is_within(&street));
        assert!(!other.is_within(&street));
        assert!(!street.is_within(&estate));
        assert_eq!(estate.parent().unwrap().as_str(), "hz/baiyang/haitian");
    }

    #[test]
    fn ids_made_later_sort_later_as_bytes_and_as_text() {
        let ids: Vec<RecordId> = (0..2000).map(|_| RecordId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids are made in order");
        let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
        // The server stores and indexes ids as text.
        assert!(
            texts.windows(2).all(|w| w[0] < w[1]),
            "their text sorts the same way"
        );
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn bad_ids_are_refused_with_their_text() {
        assert!("Hz/Bad Place".parse::<PlaceId>().is_err());
        assert!("a//b".parse::<PlaceId>().is_err());
        let err = "nope".parse::<RecordId>().unwrap_err();
        assert!(err.to_string().contains("nope"));
    }
}
