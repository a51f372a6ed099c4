//! What a container's cgroup says after its process ended: whether the kernel's OOM killer
//! struck. Read before the runtime deletes the cgroup. cgroup v1 (this machine) and v2.

use std::path::Path;

const MOUNT: &str = "/sys/fs/cgroup";

/// True when the kernel OOM-killed a process in the cgroup at `cgroups_path` (the path given
/// in the bundle, relative to the hierarchies' roots).
pub fn oom_killed(cgroups_path: &str) -> bool {
    let rel = cgroups_path.trim_start_matches('/');
    let root = Path::new(MOUNT);
    let file = if root.join("cgroup.controllers").exists() {
        root.join(rel).join("memory.events")
    } else {
        root.join("memory").join(rel).join("memory.oom_control")
    };
    std::fs::read_to_string(file).is_ok_and(|t| oom_kill_count(&t) > 0)
}

/// Removes the cgroup at `cgroups_path` and the cgroups below it from every hierarchy, where
/// they are empty (a cgroup still holding a process stays). True when none is left.
pub fn remove_empty_tree(cgroups_path: &str) -> bool {
    let rel = cgroups_path.trim_start_matches('/');
    if rel.is_empty() {
        return true;
    }
    let root = Path::new(MOUNT);
    let tops: Vec<std::path::PathBuf> = if root.join("cgroup.controllers").exists() {
        vec![root.join(rel)]
    } else {
        std::fs::read_dir(root)
            .map(|rd| rd.flatten().map(|e| e.path().join(rel)).collect())
            .unwrap_or_default()
    };
    for top in &tops {
        remove_dirs_below(top);
        let _ = std::fs::remove_dir(top);
    }
    tops.iter().all(|t| !t.exists())
}

/// Children first: a cgroup directory can only go once it has none.
fn remove_dirs_below(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_dirs_below(&e.path());
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

/// The `oom_kill N` line of memory.oom_control (v1) or memory.events (v2).
fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix("oom_kill "))
        .filter_map(|n| n.trim().parse().ok())
        .next()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_oom_kills_in_both_formats() {
        assert_eq!(
            oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(
            oom_kill_count("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\noom_group_kill 0\n"),
            1
        );
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }
}
