use super::*;
use serde_json::Value;

fn config(root: RootKind) -> ContainerConfig {
    ContainerConfig {
        hostname: "web.1".into(),
        netns: "/run/rm/netns/task-web.1".into(),
        resolv_conf: "/run/rm/tasks/web.1/resolv.conf".into(),
        hosts: "/run/rm/tasks/web.1/hosts".into(),
        root,
        args: vec!["httpd".into(), "-f".into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        user: ProcessUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![27],
        },
        limits: Limits {
            memory_bytes: Some(32 << 20),
            cpu_millis: Some(500),
            pids: Some(20),
        },
        cgroups_path: "/routemesh/n1/web.1".into(),
        hidden: vec!["/var/lib/routemesh".into()],
        programs: vec![],
    }
}

fn json(cfg: &ContainerConfig) -> Value {
    let seccomp: LinuxSeccomp =
        serde_json::from_str(r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#).unwrap();
    serde_json::to_value(spec(cfg, seccomp).unwrap()).unwrap()
}

#[test]
fn namespaces_are_new_but_the_network_is_the_sandbox() {
    let v = json(&config(RootKind::Image));
    let ns = v["linux"]["namespaces"].as_array().unwrap();
    let types: Vec<&str> = ns.iter().map(|n| n["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["pid", "ipc", "uts", "mount", "cgroup", "network"]);
    assert!(ns
        .iter()
        .filter(|n| n["type"] != "network")
        .all(|n| n.get("path").is_none()));
    assert_eq!(ns[5]["path"], "/run/rm/netns/task-web.1");
    assert_eq!(v["hostname"], "web.1");
}

#[test]
fn process_is_contained() {
    let v = json(&config(RootKind::Image));
    let p = &v["process"];
    assert_eq!(p["noNewPrivileges"], true);
    assert_eq!(p["user"]["uid"], 1000);
    assert_eq!(p["user"]["additionalGids"], serde_json::json!([27]));
    let eff: Vec<&str> = p["capabilities"]["effective"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(eff.contains(&"CAP_NET_BIND_SERVICE"));
    assert!(!eff.contains(&"CAP_SYS_ADMIN") && !eff.contains(&"CAP_NET_ADMIN"));
    for none in ["inheritable", "ambient"] {
        let set = &p["capabilities"][none];
        assert!(
            set.is_null() || set.as_array().is_some_and(|a| a.is_empty()),
            "{none}: {set}"
        );
    }
    assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    let masked = v["linux"]["maskedPaths"].as_array().unwrap();
    assert!(masked.iter().any(|m| m == "/proc/kcore"));
    assert!(masked.iter().any(|m| m == "/var/lib/routemesh"));
    assert!(v["linux"]["readonlyPaths"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "/proc/sys"));
}

#[test]
fn limits_go_to_the_cgroup() {
    let v = json(&config(RootKind::Image));
    let r = &v["linux"]["resources"];
    assert_eq!(r["memory"]["limit"], 32 << 20);
    assert_eq!(r["memory"]["swap"], 32 << 20);
    assert_eq!(r["cpu"]["quota"], 50_000);
    assert_eq!(r["cpu"]["period"], 100_000);
    assert_eq!(r["pids"]["limit"], 20);
    assert_eq!(r["devices"][0]["allow"], false);
    assert_eq!(v["linux"]["cgroupsPath"], "/routemesh/n1/web.1");
    let mut unlimited = config(RootKind::Image);
    unlimited.limits = Limits::default();
    let v = json(&unlimited);
    assert!(v["linux"]["resources"].get("memory").is_none());
    assert!(v["linux"]["resources"].get("pids").is_none());
}

fn mounts(v: &Value) -> Vec<(String, String)> {
    v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["destination"].as_str().unwrap().to_string(),
                m["type"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn an_image_root_is_writable_and_gets_the_dns_files() {
    let v = json(&config(RootKind::Image));
    assert_eq!(v["root"]["path"], "rootfs");
    assert_eq!(v["root"]["readonly"], false);
    let m = mounts(&v);
    assert!(m.contains(&("/etc/resolv.conf".into(), "bind".into())));
    assert!(m.contains(&("/etc/hosts".into(), "bind".into())));
    assert!(!m.iter().any(|(d, _)| d == "/var" || d == "/tmp"));
}

#[test]
fn the_hosts_root_is_read_only_with_private_tmp_run_and_var() {
    let v = json(&config(RootKind::Host {
        var_upper: "/run/rm/tasks/web.1/var".into(),
        var_work: "/run/rm/tasks/web.1/var-work".into(),
    }));
    assert_eq!(v["root"]["readonly"], true);
    let m = mounts(&v);
    assert_eq!(
        m[0],
        ("/var".into(), "overlay".into()),
        "before /run and /tmp hide its layer"
    );
    assert!(m.contains(&("/tmp".into(), "tmpfs".into())));
    assert!(m.contains(&("/run".into(), "tmpfs".into())));
    let mut with_program = config(RootKind::Host {
        var_upper: "/u".into(),
        var_work: "/w".into(),
    });
    with_program.programs = vec!["/tmp/build/routemesh".into()];
    let v2 = json(&with_program);
    let m2 = mounts(&v2);
    let tmp = m2.iter().position(|(d, _)| d == "/tmp").unwrap();
    let prog = m2
        .iter()
        .position(|(d, _)| d == "/tmp/build/routemesh")
        .unwrap();
    assert!(
        prog > tmp,
        "the program is bound over the private /tmp, not under it"
    );
    let opts = v2["mounts"][prog]["options"].as_array().unwrap();
    assert!(opts.iter().any(|o| o == "ro") && !opts.iter().any(|o| o == "noexec"));
    let var = &v["mounts"][0]["options"][0];
    assert_eq!(
        var,
        "lowerdir=/var,upperdir=/run/rm/tasks/web.1/var,workdir=/run/rm/tasks/web.1/var-work"
    );
}
