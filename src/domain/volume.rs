//! Volumes: their names, the Docker volume a name maps to, where apps may mount them, and the
//! paths of files inside them. Inventory §4 lists what the original got wrong here: `My_Data`
//! and `my-data` collided, Unicode names passed and then failed in Docker, mount paths were not
//! checked at all, and file names with `|` or newlines broke the listing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::hardening::VolumeMount;

/// Prefix of every Docker volume milkcrate creates for the admin.
pub const DOCKER_PREFIX: &str = "milkcrate-vol-";
/// Label carrying the name the admin chose (the original's).
pub const NAME_LABEL: &str = "milkcrate.volume_name";
/// Where the helper container sees the volume.
pub const HELPER_MOUNT: &str = "/volume";
/// Owner of every file milkcrate writes into a volume: `nobody`, the user apps run as.
pub const FILE_OWNER: u64 = 65534;

/// A volume name the admin typed, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeName(String);

impl VolumeName {
    pub fn parse(input: &str) -> Result<Self, String> {
        let name = input.trim();
        if name.is_empty() {
            return Err("Volume name is required".into());
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(
                "Volume name can only contain letters, numbers, hyphens, and underscores".into(),
            );
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err("Volume name must start with a letter or number".into());
        }
        if name.len() > 64 {
            return Err("Volume name must be 64 characters or less".into());
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Docker volume this name maps to (the original's rule): two names that differ only
    /// in case or `_`/`-` map to the same one, so uniqueness is checked on this. An install
    /// with an identity names its volumes [`Self::key`] under its own prefix instead.
    pub fn docker_name(&self) -> String {
        format!("{DOCKER_PREFIX}{}", self.key())
    }

    /// The part of the Docker name that identifies the volume: lower case, `-` for `_`.
    pub fn key(&self) -> String {
        self.0.to_lowercase().replace('_', "-")
    }
}

/// Paths an app may not mount a volume on: the root, the kernel's and the system's folders, and
/// `/tmp`, which is the hardened tmpfs.
const FORBIDDEN_MOUNTS: &[&str] = &["/proc", "/sys", "/dev", "/etc", "/tmp"];

/// A mount path, checked: absolute, normalised, not over the system.
pub fn mount_path(input: &str) -> Result<String, String> {
    let p = input.trim();
    if p.is_empty() {
        return Err("A mount path is required for each chosen volume, e.g. /data".into());
    }
    if !p.starts_with('/') {
        return Err(format!("Mount path '{p}' must be absolute, e.g. /data"));
    }
    if p.len() > 200 || p.chars().any(|c| c.is_control() || c == ':' || c == ',') {
        return Err(format!(
            "Mount path '{p}' is too long or holds a character that is not allowed"
        ));
    }
    let normalised = p.len() > 1
        && !p.ends_with('/')
        && p[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if p == "/" {
        return Err("A volume cannot be mounted on /".into());
    }
    if !normalised {
        return Err(format!(
            "Mount path '{p}' is not normalised: no empty, '.' or '..' parts, no trailing /"
        ));
    }
    if let Some(f) = FORBIDDEN_MOUNTS
        .iter()
        .find(|f| p == **f || p.starts_with(&format!("{f}/")))
    {
        return Err(format!(
            "Mount path '{p}' is not allowed: {f} belongs to the system"
        ));
    }
    Ok(p.to_string())
}

/// One entry of the stored `volume_mounts` JSON (the original's format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    pub bind: String,
    #[serde(default = "rw")]
    pub mode: String,
}

fn rw() -> String {
    "rw".into()
}

/// An app's mounts, keyed by Docker volume name: `{"milkcrate-vol-x": {"bind": "/data", "mode":
/// "rw"}}`, as the original stores them in `deployed_apps.volume_mounts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Mounts(pub BTreeMap<String, MountEntry>);

impl Mounts {
    /// Reads the stored column; NULL, empty or unreadable JSON means no mounts.
    pub fn from_column(column: Option<&str>) -> Self {
        column
            .filter(|c| !c.trim().is_empty())
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_default()
    }

    /// The stored form: NULL when there are none.
    pub fn to_column(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| serde_json::to_string(&self.0).unwrap_or_default())
    }

    /// Adds a mount, refusing a second volume on the same path.
    pub fn add(&mut self, docker_name: &str, path: &str, read_only: bool) -> Result<(), String> {
        if let Some((other, _)) = self.0.iter().find(|(_, m)| m.bind == path) {
            return Err(format!(
                "Two volumes cannot be mounted on the same path {path} (also chosen for {other})"
            ));
        }
        self.0.insert(
            docker_name.to_string(),
            MountEntry {
                bind: path.to_string(),
                mode: if read_only { "ro" } else { "rw" }.into(),
            },
        );
        Ok(())
    }

    pub fn mounts(&self) -> Vec<VolumeMount> {
        self.0
            .iter()
            .map(|(volume, m)| VolumeMount {
                volume: volume.clone(),
                target: m.bind.clone(),
                read_only: m.mode == "ro",
            })
            .collect()
    }

    pub fn uses(&self, docker_name: &str) -> bool {
        self.0.contains_key(docker_name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A path inside a volume, relative to its root: `""` is the root, else `a/b/c` with no empty,
/// `.` or `..` part. Any other character, `|` and newlines included, is a valid file name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InnerPath(String);

impl InnerPath {
    pub fn parse(input: &str) -> Result<Self, String> {
        let p = input.trim_matches('/');
        if p.is_empty() {
            return Ok(Self::default());
        }
        if p.contains('\0') || p.contains('\\') {
            return Err("A path in a volume cannot hold NUL or backslash characters".into());
        }
        if p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(format!(
                "'{input}' is not a path inside the volume: no empty, '.' or '..' parts"
            ));
        }
        if p.len() > 4096 {
            return Err("That path is too long".into());
        }
        Ok(Self(p.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Where the helper container sees it.
    pub fn in_helper(&self) -> String {
        if self.0.is_empty() {
            HELPER_MOUNT.to_string()
        } else {
            format!("{HELPER_MOUNT}/{}", self.0)
        }
    }

    pub fn join(&self, name: &str) -> Result<Self, String> {
        Self::parse(&format!("{}/{name}", self.0))
    }

    pub fn parent(&self) -> Self {
        Self(
            self.0
                .rsplit_once('/')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default(),
        )
    }

    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    /// Each folder from the top down to this one: `a`, `a/b`, `a/b/c`.
    pub fn ancestors_and_self(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut acc = String::new();
        for part in self.0.split('/').filter(|s| !s.is_empty()) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            out.push(acc.clone());
        }
        out
    }
}

/// Human size, as the original's list page shows it (B, KB, MB, GB with two decimals).
pub fn human_size(bytes: u64) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if b < K * K {
        format!("{:.2} KB", b / K)
    } else if b < K * K * K {
        format!("{:.2} MB", b / (K * K))
    } else {
        format!("{:.2} GB", b / (K * K * K))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_ascii_and_map_to_one_docker_volume() {
        assert_eq!(
            VolumeName::parse(" My_Data ").unwrap().docker_name(),
            "milkcrate-vol-my-data"
        );
        assert_eq!(
            VolumeName::parse("my-data").unwrap().docker_name(),
            "milkcrate-vol-my-data"
        );
        assert_eq!(
            VolumeName::parse("").unwrap_err(),
            "Volume name is required"
        );
        for bad in ["données", "a b", "a/b", "a.b"] {
            assert!(
                VolumeName::parse(bad)
                    .unwrap_err()
                    .contains("letters, numbers, hyphens, and underscores"),
                "{bad}"
            );
        }
        assert!(VolumeName::parse("-x").is_err());
        assert!(VolumeName::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn mount_paths_are_absolute_normalised_and_off_the_system() {
        assert_eq!(mount_path(" /data ").unwrap(), "/data");
        assert_eq!(mount_path("/srv/app/files").unwrap(), "/srv/app/files");
        assert_eq!(mount_path("/etcetera").unwrap(), "/etcetera");
        for bad in [
            "", "data", "/", "/data/", "//data", "/a/../b", "/a/./b", "/proc", "/sys/x", "/dev",
            "/etc", "/etc/app", "/tmp", "/tmp/x", "/a:b", "/a\nb",
        ] {
            assert!(mount_path(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(mount_path("/tmp").unwrap_err().contains("/tmp"));
    }

    #[test]
    fn mounts_keep_the_original_json_format() {
        let stored = r#"{"milkcrate-vol-data": {"bind": "/data", "mode": "rw"}}"#;
        let m = Mounts::from_column(Some(stored));
        assert_eq!(
            m.mounts(),
            vec![VolumeMount {
                volume: "milkcrate-vol-data".into(),
                target: "/data".into(),
                read_only: false
            }]
        );
        assert_eq!(
            m.to_column().unwrap(),
            r#"{"milkcrate-vol-data":{"bind":"/data","mode":"rw"}}"#
        );
        assert!(Mounts::from_column(None).is_empty());
        assert!(Mounts::from_column(Some("not json")).is_empty());
        assert_eq!(Mounts::default().to_column(), None);
    }

    #[test]
    fn two_volumes_never_share_a_path() {
        let mut m = Mounts::default();
        m.add("milkcrate-vol-a", "/data", false).unwrap();
        m.add("milkcrate-vol-b", "/logs", true).unwrap();
        assert!(m.add("milkcrate-vol-c", "/data", false).is_err());
        assert!(m.mounts()[1].read_only);
    }

    #[test]
    fn inner_paths_stay_inside_and_keep_odd_names() {
        assert!(InnerPath::parse("").unwrap().is_root());
        assert!(InnerPath::parse("/").unwrap().is_root());
        let p = InnerPath::parse("a b/c|d\ne/ünï.txt").unwrap();
        assert_eq!(p.file_name(), "ünï.txt");
        assert_eq!(p.parent().as_str(), "a b/c|d\ne");
        assert_eq!(p.in_helper(), "/volume/a b/c|d\ne/ünï.txt");
        assert_eq!(
            InnerPath::parse("a/b/c").unwrap().ancestors_and_self(),
            vec!["a", "a/b", "a/b/c"]
        );
        for bad in ["../x", "a/../b", "a//b", "./a", "a/\0"] {
            assert!(InnerPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_read_like_the_original() {
        assert_eq!(human_size(10), "10 B");
        assert_eq!(human_size(2048), "2.00 KB");
        assert_eq!(human_size(3 * 1024 * 1024), "3.00 MB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024), "5.00 GB");
    }
}
