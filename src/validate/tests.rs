use super::*;

fn svc(name: &str, replicas: i64, cmd: &[&str]) -> ServiceCreate {
    ServiceCreate {
        name: name.into(),
        replicas: Some(replicas),
        networks: vec![],
        env: vec![],
        command: cmd.iter().map(|s| s.to_string()).collect(),
        endpoint_mode: None,
        publish: vec![],
        lb_scheduler: None,
        ..Default::default()
    }
}

#[test]
fn publish_specs() {
    let p = publish("8080:80").unwrap();
    assert_eq!(
        (p.published, p.target, p.proto, p.mode),
        (8080, 80, Proto::Tcp, PublishMode::Ingress)
    );
    let p = publish("mode=host,9053:53/udp").unwrap();
    assert_eq!(
        (p.published, p.target, p.proto, p.mode),
        (9053, 53, Proto::Udp, PublishMode::Host)
    );
    let p = publish("published=81,target=8081,protocol=udp,mode=ingress").unwrap();
    assert_eq!((p.published, p.target, p.proto), (81, 8081, Proto::Udp));
    for bad in [
        "8080",
        "0:80",
        "70000:80",
        "8080:80/sctp",
        "mode=x,1:2",
        "published=1",
        "foo=1,1:2",
        "a:b",
    ] {
        assert!(publish(bad).is_err(), "{bad}");
    }
    assert_eq!(published_port("8080").unwrap(), (8080, Proto::Tcp));
    assert_eq!(published_port("53/udp").unwrap(), (53, Proto::Udp));
    assert!(published_port("x/udp").is_err());
    let twice = [publish("80:1").unwrap(), publish("80:2").unwrap()];
    assert!(distinct_ports(&twice)
        .unwrap_err()
        .to_string()
        .contains("published twice"));
    let both = [publish("80:1").unwrap(), publish("80:1/udp").unwrap()];
    assert!(
        distinct_ports(&both).is_ok(),
        "tcp and udp are different ports"
    );
    assert_eq!(endpoint_mode(Some("dnsrr")), Ok(EndpointMode::Dnsrr));
    assert!(endpoint_mode(Some("rr")).is_err());
    assert_eq!(lb_scheduler(None), Ok(Scheduler::Rr));
    assert_eq!(lb_scheduler(Some("mh")), Ok(Scheduler::Mh));
    assert!(lb_scheduler(Some("random")).is_err());
}

#[test]
fn errors_carry_what_was_wrong_and_say_it_as_before() {
    assert_eq!(
        publish("1:b"),
        Err(ValidationError::Publish {
            spec: "1:b".into(),
            problem: PublishProblem::Port {
                role: PortRole::Target,
                value: "b".into(),
            },
        })
    );
    let text = |r: Result<PortConfig>| r.unwrap_err().to_string();
    assert_eq!(
        text(publish("1:b")),
        "invalid --publish \"1:b\": target port \"b\" must be 1-65535"
    );
    assert_eq!(
        text(publish("mode=x,1:2")),
        "invalid --publish \"mode=x,1:2\": mode \"x\" must be ingress or host"
    );
    assert_eq!(
        subnet("10.1.0.0/31").unwrap_err().to_string(),
        "invalid subnet 10.1.0.0/31: a /31 has no room for a gateway and a task; use /30 or wider"
    );
    assert_eq!(
        command(&["no-such-xyz".into()], "/a:/b")
            .unwrap_err()
            .to_string(),
        "command \"no-such-xyz\" not found in PATH (/a:/b)"
    );
    assert_eq!(
        driver(Some("x")).unwrap_err().to_string(),
        "invalid driver \"x\": expected \"overlay\", \"bridge\" or \"macvlan\""
    );
}

#[test]
fn network_names() {
    for good in ["app", "a", "my_net.v2-x", "A9"] {
        assert!(network_name(good).is_ok(), "{good}");
    }
    for bad in ["", "-x", ".x", "a b", "a/b", "ingress", &"x".repeat(64)] {
        assert!(network_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn service_names_are_dns_labels() {
    for good in ["web", "w-1", "W9"] {
        assert!(service_name(good).is_ok(), "{good}");
    }
    assert!(service_name(&"x".repeat(MAX_SERVICE_NAME)).is_ok());
    for bad in [
        "",
        "web.1",
        "-web",
        "web-",
        "we_b",
        "a b",
        &"x".repeat(MAX_SERVICE_NAME + 1),
    ] {
        let err = service_name(bad).unwrap_err().to_string();
        assert!(err.contains("invalid service name"), "{bad:?}: {err}");
    }
}

#[test]
fn replicas_bounds() {
    assert_eq!(replicas(0), Ok(0));
    assert_eq!(replicas(3), Ok(3));
    assert!(replicas(-1)
        .unwrap_err()
        .to_string()
        .contains("invalid replicas -1"));
    assert!(replicas(MAX_REPLICAS + 1).is_err());
}

#[test]
fn env_vars() {
    assert_eq!(env_var("A=b=c"), Ok(("A".into(), "b=c".into())));
    assert_eq!(env_var("_X="), Ok(("_X".into(), "".into())));
    assert!(env_var("NOVALUE").is_err());
    assert!(env_var("1A=x").is_err());
    assert!(env_var("A-B=x").is_err());
}

#[test]
fn commands_must_exist() {
    assert!(command(&["sh".into()], "/usr/bin:/bin").is_ok());
    assert!(command(&["/bin/sh".into()], "").is_ok());
    let e = command(&["no-such-program-xyz".into()], "/usr/bin:/bin")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not found in PATH"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "x").unwrap();
    let plain = plain.display().to_string();
    assert!(command(&[plain], "").is_err(), "not executable");
    assert!(command(&[], "/bin")
        .unwrap_err()
        .to_string()
        .contains("missing command"));
}

#[test]
fn subnets_and_gateways() {
    assert_eq!(subnet("10.1.0.0/24").unwrap().to_string(), "10.1.0.0/24");
    assert!(subnet("10.1.0.1/24")
        .unwrap_err()
        .to_string()
        .contains("did you mean 10.1.0.0/24"));
    assert!(subnet("10.1.0.0/31").is_err());
    assert!(subnet("fd00::/64").is_err());
    assert!(subnet("banana").is_err());
    let s = subnet("10.1.0.0/24").unwrap();
    assert_eq!(gateway("10.1.0.254", &s).unwrap().to_string(), "10.1.0.254");
    assert!(gateway("10.1.0.0", &s).is_err());
    assert!(gateway("10.1.0.255", &s).is_err());
    assert!(gateway("10.2.0.1", &s).is_err());
}

#[test]
fn network_requests() {
    let mut req = NetworkCreate {
        name: "app".into(),
        driver: None,
        subnet: None,
        gateway: Some("10.0.0.1".into()),
        vni: None,
        options: Default::default(),
    };
    assert!(network_request(&req)
        .unwrap_err()
        .to_string()
        .contains("--gateway needs --subnet"));
    req.gateway = None;
    req.driver = Some("ipvlan".into());
    assert!(network_request(&req)
        .unwrap_err()
        .to_string()
        .contains("invalid driver"));
    // macvlan: a parent and a subnet, nothing else.
    req.driver = Some("macvlan".into());
    let err = |r: &NetworkCreate| network_request(r).unwrap_err().to_string();
    assert!(err(&req).contains("needs --opt parent=IF"));
    req.options.insert("parent".into(), "eth1".into());
    assert!(err(&req).contains("needs --subnet"));
    req.subnet = Some("192.168.5.0/24".into());
    assert_eq!(
        network_request(&req).unwrap().parent.as_deref(),
        Some("eth1")
    );
    for bad in ["", "x/y", "a:b", "sixteen-chars-xx", ".."] {
        req.options.insert("parent".into(), bad.into());
        assert!(err(&req).contains("invalid interface name"), "{bad:?}");
    }
    req.options.insert("parent".into(), "eth1".into());
    req.options.insert("mode".into(), "bridge".into());
    assert!(err(&req).contains("unknown option \"mode\""));
    req.options.clear();
    req.subnet = None;
    // Encrypted overlays: a flag.
    req.driver = Some("overlay".into());
    req.options.insert("encrypted".into(), "true".into());
    assert!(network_request(&req).unwrap().encrypted);
    req.options.insert("encrypted".into(), "yes please".into());
    assert!(err(&req).contains("expected true or false"));
    req.driver = Some("bridge".into());
    req.options.insert("encrypted".into(), "true".into());
    assert!(err(&req).contains("unknown option \"encrypted\" for a bridge network"));
    req.driver = Some("overlay".into());
    req.options.clear();
    req.driver = Some("bridge".into());
    req.vni = Some(5000);
    assert!(network_request(&req).is_err());
    req.driver = None;
    assert_eq!(network_request(&req).unwrap().vni, Some(5000));
    req.vni = Some(1 << 24);
    assert!(network_request(&req).is_err());
}

#[test]
fn service_requests() {
    let ok = service_request(&svc("web", 3, &["sh", "-c", "true"]), "/bin:/usr/bin").unwrap();
    assert_eq!(ok.replicas, 3);
    assert!(service_request(&svc("web", -1, &["sh"]), "/bin").is_err());
    assert!(service_request(&svc("web.x", 1, &["sh"]), "/bin").is_err());
    let mut dup = svc("web", 1, &["sh"]);
    dup.networks = vec!["a".into(), "a".into()];
    assert!(service_request(&dup, "/bin")
        .unwrap_err()
        .to_string()
        .contains("given twice"));
}

#[test]
fn limits_users_and_images() {
    assert_eq!(memory("32m"), Ok(32 << 20));
    assert_eq!(memory("1G"), Ok(1 << 30));
    assert_eq!(memory("67108864"), Ok(64 << 20));
    assert_eq!(memory("6144kb"), Ok(6 << 20));
    for bad in [
        "",
        "lots",
        "1k",
        "5m",
        "-1m",
        "1.5g",
        "99999999999999999999g",
    ] {
        assert!(memory(bad).is_err(), "{bad:?}");
    }
    assert_eq!(cpu("0.5"), Ok(500));
    assert_eq!(cpu("2"), Ok(2000));
    for bad in ["", "-1", "abc", "0", "0.001", "1e3", "2000"] {
        assert!(cpu(bad).is_err(), "{bad:?}");
    }
    assert_eq!(pids(20), Ok(20));
    assert!(pids(0).is_err() && pids(-1).is_err());
    for good in ["1000", "1000:1000", "app", "www-data:adm", "_apt"] {
        assert_eq!(user(good).as_deref(), Ok(good));
    }
    for bad in ["", ":", "1000:", "Root", "a b", "x:y:z", "../etc"] {
        assert!(user(bad).is_err(), "{bad:?}");
    }
    assert_eq!(image("web").as_deref(), Ok("web:latest"));
    assert!(image("Web Server").is_err());

    // With an image the command may be empty (the image's Cmd) and is not looked up on
    // the daemon's PATH (it runs inside the image).
    let mut req = svc("web", 1, &[]);
    req.image = Some("web:1".into());
    req.limit_memory = Some("32m".into());
    let ok = service_request(&req, "/nonexistent").unwrap();
    assert_eq!(ok.image.as_deref(), Some("web:1"));
    assert_eq!(ok.limits.memory_bytes, Some(32 << 20));
    req.command = vec!["httpd-only-in-the-image".into()];
    assert!(service_request(&req, "/nonexistent").is_ok());
    req.image = None;
    assert!(service_request(&req, "/nonexistent").is_err());
    req.limit_memory = Some("1k".into());
    req.image = Some("web:1".into());
    assert!(service_request(&req, "/bin")
        .unwrap_err()
        .to_string()
        .contains("--limit-memory"));
}
