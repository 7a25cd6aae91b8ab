//! Server-stamped time. The model never reads a clock: callers pass [`Timestamp`]s.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus_secs(self, secs: u64) -> Self {
        let ms = i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000);
        Timestamp(self.0.saturating_add(ms))
    }

    fn datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }

    /// RFC 3339 in UTC with millisecond precision, as the JSON API writes it.
    pub fn to_rfc3339(self) -> String {
        self.datetime().to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// The MS-PRES `publishTime` form: millisecond precision and no zone designator
    /// (real servers send `2016-09-28T14:46:06.940`; we always mean UTC).
    pub fn to_ms_pres(self) -> String {
        self.datetime().format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = Timestamp::from_millis(1_475_074_000_940);
        assert_eq!(t.to_rfc3339(), "2016-09-28T14:46:40.940Z");
        assert_eq!(t.to_ms_pres(), "2016-09-28T14:46:40.940");
        assert_eq!(t.plus_secs(2).millis(), t.millis() + 2000);
    }
}
