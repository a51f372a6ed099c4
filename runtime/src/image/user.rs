//! Docker-style user specs (`uid`, `uid:gid`, `name`, `name:group`, `uid:group`) resolved
//! against a root filesystem's /etc/passwd and /etc/group.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::ImageError;

/// Larger passwd or group files are not read.
const MAX_FILE: u64 = 4 << 20;

/// The ids a process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Groups whose /etc/group entry lists the user's name (without `gid`), in file order.
    pub additional_gids: Vec<u32>,
}

struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
}

struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `spec` as Docker does. `roots` are the root filesystem's layers, bottom first as
/// [`super::Image::layers`] lists them (searched top-down: the topmost layer holding
/// `etc/passwd` wins), or one plain root dir (`vec![PathBuf::from("/")]` for the host).
///
/// A numeric uid needs no passwd entry (gid then is the entry's gid if there is one, else
/// 0); a name must have one ([`ImageError::UnknownUser`]). A group, by name or id, replaces
/// the primary gid; a group name must be in /etc/group ([`ImageError::UnknownGroup`]). An
/// empty spec is root. Only regular files under a real `etc` directory are read, never
/// through a symlink (a layer's symlink could point anywhere on the host); whiteouts are not
/// interpreted.
pub fn resolve_user(spec: &str, roots: &[PathBuf]) -> Result<ResolvedUser, ImageError> {
    let invalid = |reason| ImageError::InvalidUser {
        spec: spec.to_string(),
        reason,
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if group.is_some_and(|g| g.contains(':')) {
        return Err(invalid("more than one `:`"));
    }
    if group.is_some_and(str::is_empty) {
        return Err(invalid("the group after `:` is empty"));
    }
    let user = if user.is_empty() {
        if group.is_some() {
            return Err(invalid("the user before `:` is empty"));
        }
        "0"
    } else {
        user
    };

    let passwd = read_etc(roots, "passwd")
        .map_err(|e| ImageError::io("reading", "etc/passwd", e))?
        .map(|text| parse_passwd(&text))
        .unwrap_or_default();
    let groups = read_etc(roots, "group")
        .map_err(|e| ImageError::io("reading", "etc/group", e))?
        .map(|text| parse_group(&text))
        .unwrap_or_default();

    let (uid, mut gid, name) = if is_numeric(user) {
        let uid = parse_id(user).ok_or_else(|| invalid("the uid is out of range"))?;
        match passwd.iter().find(|p| p.uid == uid) {
            Some(p) => (uid, p.gid, Some(p.name.clone())),
            None => (uid, 0, None),
        }
    } else {
        match passwd.iter().find(|p| p.name == user) {
            Some(p) => (p.uid, p.gid, Some(p.name.clone())),
            None => {
                return Err(ImageError::UnknownUser {
                    spec: spec.to_string(),
                    user: user.to_string(),
                })
            }
        }
    };
    if let Some(group) = group {
        gid = if is_numeric(group) {
            parse_id(group).ok_or_else(|| invalid("the gid is out of range"))?
        } else {
            match groups.iter().find(|g| g.name == group) {
                Some(g) => g.gid,
                None => {
                    return Err(ImageError::UnknownGroup {
                        spec: spec.to_string(),
                        group: group.to_string(),
                    })
                }
            }
        };
    }
    let mut additional_gids = Vec::new();
    if let Some(name) = name {
        for g in groups.iter().filter(|g| g.members.contains(&name)) {
            if g.gid != gid && !additional_gids.contains(&g.gid) {
                additional_gids.push(g.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

fn parse_id(s: &str) -> Option<u32> {
    s.parse::<u32>().ok()
}

/// `etc/<file>` of the topmost root that has it, as text; `None` when none has it.
fn read_etc(roots: &[PathBuf], file: &str) -> io::Result<Option<String>> {
    for root in roots.iter().rev() {
        let etc = root.join("etc");
        match etc.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(None), // a symlink or file hides lower layers' etc
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        let path = etc.join(file);
        match path.symlink_metadata() {
            Ok(m) if m.is_file() => return read_small(&path).map(Some),
            Ok(_) => return Ok(None), // a symlink, a whiteout or anything else: not readable here
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn read_small(path: &Path) -> io::Result<String> {
    let mut buf = Vec::new();
    fs::File::open(path)?.take(MAX_FILE).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn fields(line: &str) -> Option<Vec<&str>> {
    let line = line.trim_end_matches('\r');
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    Some(line.split(':').collect())
}

fn parse_passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter_map(fields)
        .filter_map(|f| {
            Some(Passwd {
                name: f.first()?.to_string(),
                uid: parse_id(f.get(2)?)?,
                gid: parse_id(f.get(3)?)?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(fields)
        .filter_map(|f| {
            Some(Group {
                name: f.first()?.to_string(),
                gid: parse_id(f.get(2)?)?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}
