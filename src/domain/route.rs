//! Paths a user types: the home route `/` redirects to.

use std::fmt;

/// A local path `/` may redirect to. Parsing refuses anything a browser could read as another
/// site (`//evil.example`, `/\evil`, `https://…`), the original's open redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeRoute(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("a home route must be a path on this site, such as /shop")]
    NotLocal,
    #[error(
        "a home route can only contain letters, numbers, hyphens, underscores and single forward slashes"
    )]
    BadCharacters,
    #[error("a home route must be 100 characters or less")]
    TooLong,
}

impl HomeRoute {
    /// Accepts `shop` or `/shop` (the original prefixes the slash); an empty value or `/` means
    /// "no home route" and is reported as `Ok(None)` by [`HomeRoute::parse_optional`].
    pub fn parse(input: &str) -> Result<Self, RouteError> {
        let s = input.trim();
        if s.contains("//") || s.contains('\\') || s.contains(':') {
            return Err(RouteError::NotLocal);
        }
        let path = if s.starts_with('/') {
            s.to_string()
        } else {
            format!("/{s}")
        };
        if path.len() > 100 {
            return Err(RouteError::TooLong);
        }
        if !path[1..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'))
        {
            return Err(RouteError::BadCharacters);
        }
        let path = path.trim_end_matches('/').to_string();
        if path.is_empty() {
            return Err(RouteError::NotLocal);
        }
        Ok(Self(path))
    }

    pub fn parse_optional(input: &str) -> Result<Option<Self>, RouteError> {
        match input.trim() {
            "" | "/" => Ok(None),
            s => Self::parse(s).map(Some),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HomeRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `next` (from `/login?next=`) is a path on this site. Anything else is ignored.
pub fn is_local_redirect(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control() || c == '\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_routes_stay_on_site() {
        assert_eq!(HomeRoute::parse("shop").unwrap().as_str(), "/shop");
        assert_eq!(
            HomeRoute::parse(" /shop/v2/ ").unwrap().as_str(),
            "/shop/v2"
        );
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "/a b",
            "/<script>",
            "/é",
        ] {
            assert!(HomeRoute::parse(bad).is_err(), "{bad} must be refused");
        }
        assert_eq!(HomeRoute::parse_optional("  "), Ok(None));
        assert_eq!(HomeRoute::parse_optional("/"), Ok(None));
        assert!(HomeRoute::parse(&format!("/{}", "a".repeat(100))).is_err());
    }

    #[test]
    fn next_parameter_is_local_only() {
        assert!(is_local_redirect("/admin/settings?x=1"));
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "evil",
            "/a\nb",
            "",
        ] {
            assert!(!is_local_redirect(bad), "{bad:?}");
        }
    }
}
