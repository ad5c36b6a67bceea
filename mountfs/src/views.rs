//! How `history/` names and presents things: versions folders, version files, symlinks.

use std::ffi::{OsStr, OsString};

use backup_core::identity::IncrementTime;
use backup_core::RelPath;

/// Appended to a file's name for the folder of its versions in `history/`
/// (`history/docs/report.txt.versions/`): at a glance it is not the folder `report.txt`, and
/// a script finds a file's versions by adding it.
pub const VERSIONS_SUFFIX: &str = ".versions";

/// The name of the versions folder of the file `name` in a `history/` folder whose real
/// subfolders are told by `is_dir`: `<name>.versions`, with the suffix repeated while a real
/// folder has that name (a folder `a.versions` next to a file `a` gives `a.versions.versions`).
pub fn versions_folder_name(name: &[u8], is_dir: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out = name.to_vec();
    out.extend_from_slice(VERSIONS_SUFFIX.as_bytes());
    // Bounded: a name cannot grow past the longest allowed one.
    while is_dir(&out) && out.len() < 4096 {
        out.extend_from_slice(VERSIONS_SUFFIX.as_bytes());
    }
    out
}

/// The time of the increment that stored a version (in this machine's time zone) + the file
/// name: `2024-01-05_100000_report.txt`; the `n`th other version of the same second gets
/// `~NN` (`2024-01-05_100000~01_report.txt`), which sorts after the plain name. A version whose
/// storing increment is unknown gets `0000-00-00_000000`, which sorts first, as the version is
/// older than all.
pub fn version_file_name(time: Option<&IncrementTime>, n: u32, file_name: &[u8]) -> Vec<u8> {
    let mut out = match time {
        Some(t) => t.local().format("%Y-%m-%d_%H%M%S").to_string().into_bytes(),
        None => b"0000-00-00_000000".to_vec(),
    };
    if n > 0 {
        out.extend_from_slice(format!("~{n:02}").as_bytes());
    }
    out.push(b'_');
    out.extend_from_slice(file_name);
    out
}

/// The number a same-second increment carries in its name (`backup_…_01` → 1; 0 without).
pub(crate) fn same_second_number(name: &backup_core::IncrementName) -> u32 {
    // `backup_YYYYMMDD_HHMMSS` is 22 bytes; what follows is `_NN` (or `_NN_MM`).
    name.as_str()
        .get(22..)
        .map(|rest| {
            rest.split('_')
                .filter_map(|p| p.parse::<u32>().ok())
                .fold(0u32, |a, n| a.saturating_mul(100).saturating_add(n))
        })
        .unwrap_or(0)
}

/// A relative symlink target of the version of `path` shown in
/// `history/<dir>/<name>.versions/<version>`, rewritten to resolve where it resolved in the
/// snapshot `snapshot`: up to the mount's root, then `snapshots/<snapshot>/<dir>/<target>`.
/// `None` for an absolute target (it points at the live system, as in the source).
pub(crate) fn snapshot_link_target(
    path: &RelPath,
    snapshot: &str,
    stored: &OsStr,
) -> Option<OsString> {
    let bytes = stored.as_encoded_bytes();
    if bytes.is_empty() || bytes.starts_with(b"/") {
        return None;
    }
    let dir = path.parent();
    // From the versions folder: itself, every folder of `dir`, and `history/`.
    let ups = 2 + dir.as_ref().map(RelPath::depth).unwrap_or(0);
    let mut out: Vec<u8> = Vec::new();
    for _ in 0..ups {
        out.extend_from_slice(b"../");
    }
    out.extend_from_slice(crate::SNAPSHOTS.as_bytes());
    out.push(b'/');
    out.extend_from_slice(snapshot.as_bytes());
    out.push(b'/');
    if let Some(d) = &dir {
        out.extend_from_slice(d.as_bytes());
        out.push(b'/');
    }
    out.extend_from_slice(bytes);
    // SAFETY-free conversion: the bytes are the stored target's plus ASCII.
    Some(crate::os_name(&out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use backup_core::IncrementName;

    #[test]
    fn version_names_sort_by_time() {
        let n = |s: &str| IncrementName::parse(s).unwrap();
        let t = |s: &str| IncrementTime::of(None, &n(s));
        let a = version_file_name(Some(&t("backup_20240105_100000")), 0, b"r.txt");
        let b = version_file_name(Some(&t("backup_20240105_100000_01")), 1, b"r.txt");
        let c = version_file_name(Some(&t("backup_20240106_000000")), 0, b"r.txt");
        let z = version_file_name(None, 0, b"r.txt");
        assert_eq!(a, b"2024-01-05_100000_r.txt");
        assert_eq!(b, b"2024-01-05_100000~01_r.txt");
        assert!(z < a && a < b && b < c);
        let recorded = IncrementTime::of(
            Some("2024-01-05T10:00:00+00:00"),
            &n("backup_20240105_100000"),
        );
        let local = recorded.local().format("%Y-%m-%d_%H%M%S").to_string();
        assert_eq!(
            version_file_name(Some(&recorded), 0, b"r"),
            format!("{local}_r").into_bytes()
        );
    }

    #[test]
    fn same_second_increments_number_their_versions() {
        let n = |s: &str| IncrementName::parse(s).unwrap();
        assert_eq!(same_second_number(&n("backup_20240105_100000")), 0);
        assert_eq!(same_second_number(&n("backup_20240105_100000_01")), 1);
        assert_eq!(same_second_number(&n("backup_20240105_100000_12")), 12);
    }

    #[test]
    fn versions_folders_never_take_a_real_folders_name() {
        assert_eq!(versions_folder_name(b"a.txt", |_| false), b"a.txt.versions");
        assert_eq!(
            versions_folder_name(b"a", |n| n == b"a.versions"),
            b"a.versions.versions"
        );
    }

    #[test]
    fn relative_link_targets_point_into_the_snapshot() {
        let p = RelPath::parse("pictures/sub/link").unwrap();
        let t = snapshot_link_target(&p, "backup_20240101_000000", OsStr::new("img1.jpg"));
        assert_eq!(
            t.unwrap(),
            "../../../../snapshots/backup_20240101_000000/pictures/sub/img1.jpg"
        );
        let top = RelPath::parse("link").unwrap();
        assert_eq!(
            snapshot_link_target(&top, "b", OsStr::new("../x")).unwrap(),
            "../../snapshots/b/../x"
        );
        assert!(snapshot_link_target(&p, "b", OsStr::new("/etc/hosts")).is_none());
    }
}
