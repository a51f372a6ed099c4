use super::*;

#[test]
fn bad_urls_say_why() {
    let err = |url: &str| endpoints_from_url(url).unwrap_err().to_string();
    assert_eq!(
        err("http://h:1"),
        "store etcd url \"http://h:1\": must start with etcd://"
    );
    assert_eq!(
        err("etcd://"),
        "store etcd url \"etcd://\": names no host:port"
    );
    assert_eq!(
        err("etcd://h:1,h2"),
        "store etcd url \"etcd://h:1,h2\": endpoint \"h2\" has no port"
    );
}

#[tokio::test]
async fn unusable_tls_files_are_refused_before_dialling() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let connect = |tls: TlsFiles| async move {
        EtcdStore::connect(&["127.0.0.1:1".into()], Some(tls), Duration::from_secs(1))
            .await
            .err()
            .unwrap()
    };
    let missing = connect(TlsFiles {
        ca: ca.clone(),
        cert: None,
        key: None,
    })
    .await;
    assert!(matches!(
        &missing,
        StoreError::EtcdTls {
            tls: TlsError::Read {
                file: TlsFile::Ca,
                ..
            },
            ..
        }
    ));
    assert!(
        missing.to_string().starts_with(&format!(
            "store etcd at 127.0.0.1:1: reading TLS CA certificate {}: ",
            ca.display()
        )),
        "{missing}"
    );
    std::fs::write(&ca, "").unwrap();
    let half = connect(TlsFiles {
        ca,
        cert: Some("/c.pem".into()),
        key: None,
    })
    .await;
    assert_eq!(
        half.to_string(),
        "store etcd at 127.0.0.1:1: a TLS client certificate needs its key, and a key its certificate"
    );
    let none = EtcdStore::connect(&[], None, Duration::from_secs(1))
        .await
        .err()
        .unwrap();
    assert_eq!(none.to_string(), "store etcd at : no endpoint given");
}

#[test]
fn plaintext_to_another_machine_is_told_apart() {
    let eps = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let local = eps(&[
        "127.0.0.1:2379",
        "127.1.2.3:2379",
        "localhost:2379",
        "http://127.0.0.1:2379",
        "[::1]:2379",
        "https://192.168.1.5:2379",
    ]);
    assert!(plaintext_remote(&local, false).is_empty());
    let remote = eps(&[
        "192.168.100.254:2379",
        "http://etcd.example:2379",
        "[fd00::1]:2379",
    ]);
    assert_eq!(plaintext_remote(&remote, false), remote);
    assert!(plaintext_remote(&remote, true).is_empty());
}
