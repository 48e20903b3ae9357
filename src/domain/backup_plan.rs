//! The rules of scheduled backups, without IO: a schedule (five-field cron, or the plain forms
//! "daily at 03:00" and "hourly") and when it next fires, in UTC; retention (keep the last N,
//! the newest of each of the last D days and W weeks); and the names archives get
//! (`milkcrate_backup_<YYYYmmdd_HHMMSS>[-n].tar.gz[.age]`), which sort by date.

/// A parsed schedule. Times are UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    day_restricted: bool,
    weekday_restricted: bool,
    text: String,
}

impl Schedule {
    /// Parses `daily at HH:MM`, `hourly`, or five cron fields (minute hour day month weekday;
    /// `*`, `*/n`, `a-b`, `a-b/n` and lists; weekday 0–7 with 0 and 7 Sunday).
    pub fn parse(input: &str) -> Result<Self, String> {
        let text = input.trim().to_ascii_lowercase();
        let cron = if text == "hourly" {
            "0 * * * *".to_string()
        } else if let Some(at) = text.strip_prefix("daily at ") {
            let (h, m) = at.trim().split_once(':').ok_or_else(|| {
                format!("'{input}': write the time as HH:MM, e.g. daily at 03:00")
            })?;
            let h: u32 = h
                .parse()
                .ok()
                .filter(|h| *h < 24)
                .ok_or_else(|| format!("'{input}': the hour must be 0 to 23"))?;
            let m: u32 = m
                .parse()
                .ok()
                .filter(|m| *m < 60)
                .ok_or_else(|| format!("'{input}': the minute must be 0 to 59"))?;
            format!("{m} {h} * * *")
        } else {
            text.clone()
        };
        let fields: Vec<&str> = cron.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "'{}' is not a schedule: write 'daily at 03:00', 'hourly', or five cron fields such as '30 3 * * *'",
                input.trim()
            ));
        }
        let field = |i: usize, lo: u32, hi: u32, what: &str| {
            parse_field(fields[i], lo, hi)
                .map_err(|e| format!("cron {what} field '{}': {e}", fields[i]))
        };
        let mut weekdays = field(4, 0, 7, "weekday")?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        weekdays.truncate(7);
        Ok(Self {
            minutes: field(0, 0, 59, "minute")?,
            hours: field(1, 0, 23, "hour")?,
            days: field(2, 1, 31, "day")?,
            months: field(3, 1, 12, "month")?,
            weekdays,
            day_restricted: fields[2] != "*",
            weekday_restricted: fields[4] != "*",
            text: input.trim().to_string(),
        })
    }

    /// The schedule as it was written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The first minute strictly after `unix` (seconds, UTC) at which the schedule fires;
    /// `None` when it never does within four years (e.g. `0 0 31 2 *`).
    pub fn next_after(&self, unix: i64) -> Option<i64> {
        let mut t = (unix.div_euclid(60) + 1) * 60;
        let end = t + 4 * 366 * 86_400;
        while t < end {
            let dt = time::OffsetDateTime::from_unix_timestamp(t).ok()?;
            let day_ok = {
                let dom = self.days[dt.day() as usize];
                let dow = self.weekdays[dt.weekday().number_days_from_sunday() as usize];
                match (self.day_restricted, self.weekday_restricted) {
                    (true, true) => dom || dow,
                    (true, false) => dom,
                    (false, true) => dow,
                    (false, false) => true,
                }
            };
            if !self.months[u8::from(dt.month()) as usize] || !day_ok {
                // Next midnight.
                t = (t.div_euclid(86_400) + 1) * 86_400;
                continue;
            }
            if !self.hours[dt.hour() as usize] {
                t = (t.div_euclid(3600) + 1) * 3600;
                continue;
            }
            if self.minutes[dt.minute() as usize] {
                return Some(t);
            }
            t += 60;
        }
        None
    }
}

/// One cron field as a table of allowed values (index = value).
fn parse_field(field: &str, lo: u32, hi: u32) -> Result<Vec<bool>, String> {
    let mut allowed = vec![false; hi as usize + 1];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("the step '{s}' must be a positive number"))?,
            ),
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a, lo, hi)?, number(b, lo, hi)?)
        } else {
            let a = number(range, lo, hi)?;
            (a, if step > 1 { hi } else { a })
        };
        if a > b {
            return Err(format!("the range {a}-{b} runs backwards"));
        }
        let mut v = a;
        while v <= b {
            allowed[v as usize] = true;
            v += step;
        }
    }
    Ok(allowed)
}

fn number(s: &str, lo: u32, hi: u32) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| format!("'{s}' must be a number from {lo} to {hi}"))
}

/// How many backups a target keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
}

impl Retention {
    /// Whether any rule is set (all zero keeps everything).
    pub fn is_set(&self) -> bool {
        self.keep_last + self.keep_daily + self.keep_weekly > 0
    }

    /// Which of `times` (unix seconds of each backup, any order) to keep: the `keep_last`
    /// newest, the newest of each of the `keep_daily` most recent days that have a backup,
    /// and of each of the `keep_weekly` most recent weeks (Monday to Sunday, UTC). The newest
    /// backup is always kept; with no rule set everything is.
    pub fn kept(&self, times: &[i64]) -> Vec<bool> {
        let mut keep = vec![!self.is_set(); times.len()];
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(times[i]));
        for &i in order.iter().take(self.keep_last.max(1) as usize) {
            keep[i] = true;
        }
        let mut mark = |period: i64, count: u32, offset: i64| {
            let mut seen: Vec<i64> = Vec::new();
            for &i in &order {
                let bucket = (times[i].div_euclid(86_400) + offset).div_euclid(period);
                if seen.contains(&bucket) {
                    continue;
                }
                if seen.len() as u32 >= count {
                    break;
                }
                seen.push(bucket);
                keep[i] = true;
            }
        };
        mark(1, self.keep_daily, 0);
        // 1970-01-01 was a Thursday: +3 days puts week boundaries on Mondays.
        mark(7, self.keep_weekly, 3);
        keep
    }
}

/// The prefix of every backup archive's name.
pub const BACKUP_PREFIX: &str = "milkcrate_backup_";

/// A finished backup's name (`milkcrate_backup_<stamp>[-<n>].tar.gz`, or `.tar.gz.age` when
/// encrypted; never a `.part`) as a key that sorts by date, then by `n` for backups of the
/// same second.
pub fn backup_sort_key(name: &str) -> Option<(String, u32)> {
    let rest = name.strip_prefix(BACKUP_PREFIX)?;
    let date = rest
        .strip_suffix(".tar.gz.age")
        .or_else(|| rest.strip_suffix(".tar.gz"))?;
    let (stamp, n) = match date.rsplit_once('-') {
        Some((stamp, n)) => (stamp, n.parse::<u32>().ok()?),
        None => (date, 1),
    };
    let ok = stamp.len() == 15
        && stamp.as_bytes()[8] == b'_'
        && stamp
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 8 || b.is_ascii_digit());
    ok.then(|| (stamp.to_string(), n))
}

/// The time a backup's name records (unix seconds), for retention.
pub fn backup_time(name: &str) -> Option<i64> {
    let (stamp, _) = backup_sort_key(name)?;
    let n = |r: std::ops::Range<usize>| stamp[r].parse::<i64>().ok();
    let date = time::Date::from_calendar_date(
        i32::try_from(n(0..4)?).ok()?,
        time::Month::try_from(u8::try_from(n(4..6)?).ok()?).ok()?,
        u8::try_from(n(6..8)?).ok()?,
    )
    .ok()?;
    let t = time::Time::from_hms(
        u8::try_from(n(9..11)?).ok()?,
        u8::try_from(n(11..13)?).ok()?,
        u8::try_from(n(13..15)?).ok()?,
    )
    .ok()?;
    Some(date.with_time(t).assume_utc().unix_timestamp())
}

/// The name of the `n`th backup of `stamp` (the first has no counter).
pub fn backup_name(stamp: &str, n: u32, encrypted: bool) -> String {
    let ext = if encrypted { ".tar.gz.age" } else { ".tar.gz" };
    if n <= 1 {
        format!("{BACKUP_PREFIX}{stamp}{ext}")
    } else {
        format!("{BACKUP_PREFIX}{stamp}-{n}{ext}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
        time::PrimitiveDateTime::parse(s, &f)
            .unwrap()
            .assume_utc()
            .unix_timestamp()
    }

    #[test]
    fn daily_at_fires_once_a_day_at_that_time() {
        let s = Schedule::parse("daily at 03:00").unwrap();
        assert_eq!(
            s.next_after(at("2026-01-01 02:59")),
            Some(at("2026-01-01 03:00"))
        );
        assert_eq!(
            s.next_after(at("2026-01-01 03:00")),
            Some(at("2026-01-02 03:00"))
        );
        assert_eq!(
            Schedule::parse("hourly")
                .unwrap()
                .next_after(at("2026-01-01 02:10")),
            Some(at("2026-01-01 03:00"))
        );
    }

    #[test]
    fn cron_fields_steps_ranges_and_weekdays() {
        let s = Schedule::parse("*/15 1-2 * * *").unwrap();
        assert_eq!(
            s.next_after(at("2026-01-01 00:00")),
            Some(at("2026-01-01 01:00"))
        );
        assert_eq!(
            s.next_after(at("2026-01-01 01:50")),
            Some(at("2026-01-01 02:00"))
        );
        assert_eq!(
            s.next_after(at("2026-01-01 02:45")),
            Some(at("2026-01-02 01:00"))
        );
        // 2026-01-04 is a Sunday; 7 means Sunday too.
        let sunday = Schedule::parse("30 4 * * 7").unwrap();
        assert_eq!(
            sunday.next_after(at("2026-01-01 00:00")),
            Some(at("2026-01-04 04:30"))
        );
        // Day of month and weekday both set: either matches, as in cron.
        let either = Schedule::parse("0 0 10 * 0").unwrap();
        assert_eq!(
            either.next_after(at("2026-01-01 00:00")),
            Some(at("2026-01-04 00:00"))
        );
        assert_eq!(Schedule::parse("0 0 31 2 *").unwrap().next_after(0), None);
        assert_eq!(
            Schedule::parse("* * * * *")
                .unwrap()
                .next_after(at("2026-01-01 00:00") + 5),
            Some(at("2026-01-01 00:01"))
        );
    }

    #[test]
    fn bad_schedules_are_refused_with_a_reason() {
        for bad in [
            "",
            "daily at 25:00",
            "daily at 3",
            "61 * * * *",
            "* * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "x * * * *",
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }

    #[test]
    fn retention_keeps_last_daily_and_weekly() {
        // Two backups a day for 20 days.
        let mut times = Vec::new();
        for d in 0..20 {
            times.push(at("2026-03-01 01:00") + d * 86_400);
            times.push(at("2026-03-01 13:00") + d * 86_400);
        }
        let r = Retention {
            keep_last: 3,
            keep_daily: 0,
            keep_weekly: 0,
        };
        let kept = r.kept(&times);
        assert_eq!(kept.iter().filter(|k| **k).count(), 3);
        assert!(kept[39] && kept[38] && kept[37] && !kept[36]);
        let r = Retention {
            keep_last: 1,
            keep_daily: 5,
            keep_weekly: 0,
        };
        let kept = r.kept(&times);
        // The newest, then the newest of each of the 5 last days (the newest is one of them).
        assert_eq!(kept.iter().filter(|k| **k).count(), 5);
        let r = Retention {
            keep_last: 0,
            keep_daily: 0,
            keep_weekly: 2,
        };
        let kept: Vec<usize> = r
            .kept(&times)
            .iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| i)
            .collect();
        // 2026-03-20 is a Friday: its week began Monday the 16th; the week before ended on
        // Sunday the 15th (index 14*2+1).
        assert_eq!(kept, vec![29, 39]);
        let none = Retention {
            keep_last: 0,
            keep_daily: 0,
            keep_weekly: 0,
        };
        assert!(none.kept(&times).iter().all(|k| *k));
    }

    #[test]
    fn names_sort_and_give_their_time() {
        assert_eq!(
            backup_name("20260301_010203", 1, true),
            "milkcrate_backup_20260301_010203.tar.gz.age"
        );
        assert_eq!(
            backup_sort_key("milkcrate_backup_20260301_010203-3.tar.gz"),
            Some(("20260301_010203".into(), 3))
        );
        assert_eq!(backup_sort_key(".milkcrate_backup_x.part"), None);
        assert_eq!(
            backup_sort_key("milkcrate_backup_20260301_010203.tar.gz.age.sha256"),
            None
        );
        assert_eq!(
            backup_sort_key("milkcrate_backup_2026x301_010203.tar.gz"),
            None
        );
        assert_eq!(
            backup_time("milkcrate_backup_20260301_010203-2.tar.gz.age"),
            Some(at("2026-03-01 01:02") + 3)
        );
    }
}
