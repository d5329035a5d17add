//! Serde for `SystemTime` as RFC 3339 text (what HTTP clients expect).

use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Format a time as RFC 3339 (UTC, `…Z`).
pub fn format(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*t))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(d)?;
    let t = OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)?;
    Ok(t.into())
}
