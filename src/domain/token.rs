//! API token rules, no IO: what a scope allows, which scope may mint which, and how a
//! lifetime is written (`90d`, `12h`, `never`).
//!
//! Scopes are ordered: `read` < `deploy` < `admin`. A `deploy` token may be limited to named
//! apps; a limited token is narrower than an unlimited one of the same level.

use std::fmt;

/// How much a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Read apps, deploys, logs, volumes (not the audit log). A `deploy` token limited to
    /// apps reads only those.
    Read,
    /// Read, plus create/update/rollback/redeploy/start/stop/restart/delete apps and set their
    /// environment.
    Deploy,
    /// Everything, including volumes and tokens.
    Admin,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Deploy => "deploy",
            Level::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read" => Ok(Level::Read),
            "deploy" => Ok(Level::Deploy),
            "admin" => Ok(Level::Admin),
            other => Err(format!(
                "'{other}' is not a scope; use read, deploy or admin"
            )),
        }
    }
}

/// A token's scope: its level and, for `deploy`, the apps it is limited to (empty: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub level: Level,
    /// Name keys (`AppName::key`) of the apps a `deploy` token may change; empty means any.
    pub apps: Vec<String>,
}

impl Scope {
    pub fn admin() -> Self {
        Scope {
            level: Level::Admin,
            apps: Vec::new(),
        }
    }

    /// `level` and an app list; apps are only meaningful for `deploy`.
    pub fn new(level: Level, apps: &[String]) -> Result<Self, String> {
        let mut keys = Vec::new();
        for a in apps.iter().flat_map(|a| a.split(',')) {
            let a = a.trim();
            if a.is_empty() {
                continue;
            }
            let name = super::app::AppName::parse(a)?;
            keys.push(name.key());
        }
        keys.sort();
        keys.dedup();
        if !keys.is_empty() && level != Level::Deploy {
            return Err(format!(
                "Only a deploy token can be limited to apps; a {} token covers all of them",
                level.as_str()
            ));
        }
        Ok(Scope { level, apps: keys })
    }

    /// Whether this scope may do what `action` needs on the app whose name key is `app`
    /// (`None`: not about one app, e.g. listing).
    pub fn allows(&self, need: Level, app: Option<&str>) -> bool {
        if self.level < need {
            return false;
        }
        if self.level == Level::Admin {
            return true;
        }
        match app {
            Some(key) => self.sees(key),
            // Listings are filtered by `sees`; an action about no particular app (creating
            // one is checked by its name) needs an unlimited token.
            None => need == Level::Read || self.apps.is_empty(),
        }
    }

    /// Whether the app with name key `key` is within this scope at all: a token limited to
    /// apps neither reads nor changes any other (their logs, deploys, env keys, volumes).
    pub fn sees(&self, key: &str) -> bool {
        self.level == Level::Admin || self.apps.is_empty() || self.apps.iter().any(|a| a == key)
    }

    /// Whether a token of this scope may mint one of `other` (never a wider one).
    pub fn covers(&self, other: &Scope) -> bool {
        if other.level > self.level {
            return false;
        }
        if self.level == Level::Admin || self.apps.is_empty() {
            return true;
        }
        // A limited deploy token mints only tokens limited to a subset of its apps (an
        // unlimited read token would read every other app).
        other.level == Level::Deploy
            && !other.apps.is_empty()
            && other.apps.iter().all(|a| self.apps.contains(a))
    }

    /// The stored form of the app list (comma-separated name keys).
    pub fn apps_column(&self) -> String {
        self.apps.join(",")
    }

    pub fn from_columns(level: &str, apps: &str) -> Result<Self, String> {
        let level = Level::parse(level)?;
        let apps: Vec<String> = apps
            .split(',')
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect();
        Ok(Scope { level, apps })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.apps.is_empty() {
            write!(f, "{}", self.level.as_str())
        } else {
            write!(f, "{} ({})", self.level.as_str(), self.apps.join(", "))
        }
    }
}

/// The longest a token may live: a year.
pub const MAX_LIFETIME_SECS: i64 = 366 * 86_400;

/// A lifetime such as `90d`, `12h`, `30m`, or `never`; `None` is "never expires".
pub fn parse_lifetime(input: &str) -> Result<Option<i64>, String> {
    let s = input.trim().to_ascii_lowercase();
    if s == "never" || s.is_empty() {
        return Ok(None);
    }
    let bad = || format!("'{input}' is not a lifetime; write e.g. 90d, 12h, 30m or never");
    let (digits, unit) = s.split_at(s.len() - 1);
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let secs = match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        "m" => n.checked_mul(60),
        _ => return Err(bad()),
    }
    .ok_or_else(bad)?;
    if secs <= 0 {
        return Err(bad());
    }
    if secs > MAX_LIFETIME_SECS {
        return Err("A token may live at most 366 days".into());
    }
    Ok(Some(secs))
}

/// A token's name: 1–60 printable characters.
pub fn check_name(input: &str) -> Result<String, String> {
    let name = input.trim();
    if name.is_empty() || name.chars().count() > 60 || name.chars().any(char::is_control) {
        return Err("A token needs a name of 1 to 60 printable characters".into());
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(apps: &[&str]) -> Scope {
        Scope::new(
            Level::Deploy,
            &apps.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        )
        .expect("valid scope")
    }

    #[test]
    fn levels_allow_what_they_say() {
        let read = Scope::new(Level::Read, &[]).expect("read");
        assert!(read.allows(Level::Read, Some("a")));
        assert!(!read.allows(Level::Deploy, Some("a")));
        assert!(!read.allows(Level::Admin, None));
        let limited = deploy(&["app-a"]);
        assert!(limited.allows(Level::Deploy, Some("app-a")));
        assert!(!limited.allows(Level::Deploy, Some("app-b")));
        // A limited token does not even read another app.
        assert!(limited.allows(Level::Read, Some("app-a")));
        assert!(!limited.allows(Level::Read, Some("app-b")));
        assert!(
            limited.allows(Level::Read, None),
            "listings, filtered by `sees`"
        );
        assert!(limited.sees("app-a") && !limited.sees("app-b"));
        assert!(!limited.allows(Level::Admin, None));
        assert!(deploy(&[]).allows(Level::Deploy, Some("anything")));
        assert!(Scope::admin().allows(Level::Admin, None));
    }

    #[test]
    fn app_names_are_keyed_like_app_names() {
        assert_eq!(deploy(&["App_A"]).apps, vec!["app-a".to_string()]);
        assert!(Scope::new(Level::Read, &["a".into()]).is_err());
        assert!(Scope::new(Level::Deploy, &["no/slash".into()]).is_err());
    }

    #[test]
    fn no_token_mints_a_wider_one() {
        let read = Scope::new(Level::Read, &[]).expect("read");
        let all = deploy(&[]);
        let ab = deploy(&["app-a", "app-b"]);
        let a = deploy(&["app-a"]);
        assert!(Scope::admin().covers(&Scope::admin()));
        assert!(!all.covers(&Scope::admin()));
        assert!(all.covers(&ab));
        assert!(ab.covers(&a));
        assert!(!a.covers(&ab));
        assert!(!a.covers(&all));
        assert!(!a.covers(&read), "a read token would read every app");
        assert!(!read.covers(&a));
        assert!(read.covers(&read));
    }

    #[test]
    fn lifetimes_parse_and_are_bounded() {
        assert_eq!(parse_lifetime("90d"), Ok(Some(90 * 86_400)));
        assert_eq!(parse_lifetime("12h"), Ok(Some(12 * 3_600)));
        assert_eq!(parse_lifetime("never"), Ok(None));
        assert!(parse_lifetime("0d").is_err());
        assert!(parse_lifetime("-1d").is_err());
        assert!(parse_lifetime("400d").is_err());
        assert!(parse_lifetime("9999999999999999999d").is_err());
        assert!(parse_lifetime("d").is_err());
        assert!(parse_lifetime("5w").is_err());
    }
}
