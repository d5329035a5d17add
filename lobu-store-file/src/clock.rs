//! Instants in records: RFC 3339 text with nanoseconds (readable with `jq`, exact when read
//! back), and whole milliseconds for file names.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let text = OffsetDateTime::from(*t)
        .format(&Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    s.serialize_str(&text)
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(d)?;
    let t = OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)?;
    Ok(t.into())
}

/// Milliseconds since the epoch, rounded down (so a name's instant is never later than the
/// record's); instants before the epoch are 0.
pub(crate) fn millis(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct At(#[serde(with = "super")] SystemTime);

    #[test]
    fn instants_round_trip_to_the_nanosecond() {
        let t = UNIX_EPOCH + Duration::new(1_780_000_000, 123_456_789);
        let text = serde_json::to_string(&At(t)).unwrap();
        assert_eq!(text, "\"2026-05-28T20:26:40.123456789Z\"");
        let At(back) = serde_json::from_str(&text).unwrap();
        assert_eq!(back, t);
        assert_eq!(millis(t), 1_780_000_000_123);
    }
}
