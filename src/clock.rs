//! Wall-clock time in the two forms milkcrate writes: seconds since the epoch (the store) and
//! the original's compact UTC stamps (image tags, backup names).

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `YYYYmmdd<sep>HHMMSS` in UTC: `-` for image tags, `_` for backup names, as the original.
pub fn utc_stamp(sep: char) -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}{sep}{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// `YYYY-mm-dd HH:MM:SS UTC` for Unix seconds (pages, audit details).
pub fn format_unix(secs: i64) -> String {
    match iso_seconds(secs) {
        Some(iso) => format!("{} UTC", iso.replacen('T', " ", 1)),
        None => "-".into(),
    }
}

/// `YYYY-mm-ddTHH:MM:SS`, RFC 3339's date and time of day (UTC) for Unix seconds, without a
/// fraction or offset (the log lines add theirs).
pub fn iso_seconds(secs: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// [`iso_seconds`] for times that come close together (one per logged request): made once a
/// second.
#[derive(Debug, Default)]
pub struct SecondCache {
    second: Option<i64>,
    text: String,
}

impl SecondCache {
    /// `secs` as [`iso_seconds`] writes it; empty for a time it cannot write.
    pub fn get(&mut self, secs: i64) -> &str {
        if self.second != Some(secs) {
            self.text = iso_seconds(secs).unwrap_or_default();
            self.second = Some(secs);
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_written_as_pages_and_logs_read_them() {
        assert_eq!(format_unix(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            iso_seconds(1_764_670_000).as_deref(),
            Some("2025-12-02T10:06:40")
        );
        let mut cache = SecondCache::default();
        assert_eq!(cache.get(1_764_670_000), "2025-12-02T10:06:40");
        assert_eq!(cache.get(1_764_670_001), "2025-12-02T10:06:41");
    }
}
