//! Store tests on images built by routemesh-testsupport (busybox-static, no registry).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use routemesh_testsupport::oci_image::{
    build_busybox_image, busybox_config, busybox_layer, write_archive, write_image, LayerBuilder,
    TestConfig, TestImage, TestLayer, GROUP, PASSWD,
};

use super::*;

const NAME: &str = "rmtest/busybox:1";

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    store: ImageStore,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let store = ImageStore::open(dir.join("store")).unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        store,
    }
}

impl Fixture {
    fn busybox(&self, sub: &str, name: &str) -> TestImage {
        let d = self.dir.join(sub);
        fs::create_dir_all(&d).unwrap();
        build_busybox_image(&d, name).unwrap()
    }

    fn image(&self, sub: &str, name: Option<&str>, layers: &[TestLayer]) -> TestImage {
        let d = self.dir.join(sub);
        fs::create_dir_all(&d).unwrap();
        write_image(&d, name, layers, &TestConfig::default()).unwrap()
    }

    fn layer_dirs(&self) -> BTreeSet<String> {
        fs::read_dir(self.store.root().join("layers"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Everything observable about the store: its listing and every path under its root.
    fn snapshot(&self) -> (Vec<ImageSummary>, BTreeSet<PathBuf>) {
        let mut paths = BTreeSet::new();
        walk(self.store.root(), self.store.root(), &mut paths);
        (self.store.list().unwrap(), paths)
    }
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        out.insert(p.strip_prefix(base).unwrap().to_path_buf());
        if e.file_type().unwrap().is_dir() {
            walk(base, &p, out);
        }
    }
}

/// A layer tar holding one file.
fn one_file(path: &str, mode: u32, data: &[u8]) -> Vec<u8> {
    let mut l = LayerBuilder::new();
    l.file(path, mode, data).unwrap();
    l.finish().unwrap()
}

fn load_problem(err: ImageError) -> LoadProblem {
    match err {
        ImageError::Load { problem, .. } => problem,
        other => panic!("expected a load error, got {other:?}"),
    }
}

fn check_busybox(store: &ImageStore, img: &TestImage) {
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, NAME);
    assert_eq!(list[0].id, img.id);
    let busybox_size = fs::metadata("/bin/busybox").unwrap().len();
    assert!(list[0].size >= busybox_size, "{list:?}");
    assert_eq!(list[0].created.as_deref(), Some("2024-01-01T00:00:00Z"));

    let by_name = store.get(NAME).unwrap();
    assert_eq!(by_name.name, NAME);
    assert_eq!(by_name.id, img.id);
    let hex = img.id.strip_prefix("sha256:").unwrap();
    assert_eq!(store.get(&hex[..12]).unwrap(), by_name);
    assert_eq!(store.get(&img.id).unwrap(), by_name);
    assert!(matches!(store.get("nothere"), Err(ImageError::NotFound(_))));
    assert!(matches!(
        store.get("rmtest/busybox:2"),
        Err(ImageError::NotFound(_))
    ));

    assert_eq!(by_name.layers.len(), 1);
    let layer = &by_name.layers[0];
    assert!(layer.starts_with(store.root().join("layers")));
    let bb = fs::metadata(layer.join("bin/busybox")).unwrap();
    assert_eq!(bb.len(), busybox_size);
    assert_eq!(bb.mode() & 0o7777, 0o755);
    assert_eq!(
        fs::read_link(layer.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read_to_string(layer.join("etc/passwd")).unwrap(),
        PASSWD
    );
    assert_eq!(
        fs::symlink_metadata(layer.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(bb.mtime(), 1_700_000_000);
    assert_eq!(
        fs::metadata(layer.join("etc")).unwrap().mtime(),
        1_700_000_000
    );

    let want = busybox_config();
    assert_eq!(
        by_name.config,
        ImageConfig {
            entrypoint: vec![],
            cmd: want.cmd,
            env: want.env,
            working_dir: Some("/".into()),
            user: None,
            exposed_ports: vec!["80/tcp".into()],
        }
    );
    assert!(by_name
        .config
        .env
        .contains(&"IMAGE_ENV=from-image".to_string()));
}

#[test]
fn loads_from_layout_dir() {
    let f = fixture();
    let img = f.busybox("img", NAME);
    let loaded = f.store.load(&img.layout_dir, None).unwrap();
    assert_eq!(loaded, f.store.list().unwrap());
    check_busybox(&f.store, &img);
    // The staging area is cleaned up.
    assert_eq!(fs::read_dir(f.store.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn loads_from_archive_plain_and_gzip() {
    let f = fixture();
    let img = f.busybox("img", NAME);
    f.store.load(&img.archive, None).unwrap();
    check_busybox(&f.store, &img);

    let g = fixture();
    let gz = g.dir.join("image.tar.gz");
    let mut enc =
        flate2::write::GzEncoder::new(fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    std::io::copy(&mut fs::File::open(&img.archive).unwrap(), &mut enc).unwrap();
    enc.finish().unwrap();
    g.store.load(&gz, None).unwrap();
    check_busybox(&g.store, &img);
}

#[test]
fn loading_twice_is_idempotent_and_names_share_layers() {
    let f = fixture();
    let img = f.busybox("img", NAME);
    let first = f.store.load(&img.archive, None).unwrap();
    let layer = f.store.get(NAME).unwrap().layers[0].clone();
    let ino = fs::metadata(layer.join("bin/busybox")).unwrap().ino();

    let again = f.store.load(&img.layout_dir, None).unwrap();
    assert_eq!(first, again);
    assert_eq!(f.store.list().unwrap(), first);
    assert_eq!(f.layer_dirs().len(), 1);
    // Not unpacked again.
    assert_eq!(fs::metadata(layer.join("bin/busybox")).unwrap().ino(), ino);

    let other = f.store.load(&img.archive, Some("other")).unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].name, "other:latest");
    assert_eq!(other[0].id, img.id);
    let names: Vec<String> = f
        .store
        .list()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["other:latest".to_string(), NAME.to_string()]);
    assert_eq!(f.store.get("other").unwrap().layers, vec![layer]);
    assert_eq!(f.layer_dirs().len(), 1);
    assert_eq!(
        fs::metadata(f.store.get("other").unwrap().layers[0].join("bin/busybox"))
            .unwrap()
            .ino(),
        ino
    );
    // An id shared by two names still finds the image.
    assert_eq!(f.store.get(&img.id).unwrap().id, img.id);
}

#[test]
fn names_from_annotations_and_tags() {
    let f = fixture();
    let layer = TestLayer::gzip(one_file("x", 0o644, b"x"));

    let bare = f.image("bare", Some("latest"), std::slice::from_ref(&layer));
    let err = load_problem(f.store.load(&bare.layout_dir, None).unwrap_err());
    assert!(matches!(err, LoadProblem::NoName), "{err:?}");
    assert!(err.to_string().contains("give a tag"), "{err}");

    let unnamed = f.image("unnamed", None, std::slice::from_ref(&layer));
    let err = f.store.load(&unnamed.archive, None).unwrap_err();
    assert!(matches!(load_problem(err), LoadProblem::NoName));
    assert!(f.store.list().unwrap().is_empty());

    let loaded = f.store.load(&unnamed.archive, Some("x/y:2")).unwrap();
    assert_eq!(loaded[0].name, "x/y:2");

    let web = f.image("web", Some("web"), std::slice::from_ref(&layer));
    assert_eq!(
        f.store.load(&web.layout_dir, None).unwrap()[0].name,
        "web:latest"
    );

    let full = f.image("full", Some("docker.io/library/web:1"), &[layer]);
    assert_eq!(
        f.store.load(&full.layout_dir, None).unwrap()[0].name,
        "docker.io/library/web:1"
    );
    assert!(f.store.get("docker.io/library/web:1").is_ok());

    assert!(matches!(
        f.store.load(&full.layout_dir, Some("Bad Name")),
        Err(ImageError::InvalidReference { .. })
    ));
    assert!(matches!(
        f.store.get("a/../b"),
        Err(ImageError::InvalidReference { .. })
    ));
}

#[test]
fn broken_sources_are_refused_and_change_nothing() {
    let f = fixture();
    let good = f.busybox("good", "good:1");
    f.store.load(&good.archive, None).unwrap();
    let before = f.snapshot();

    // A truncated archive.
    let img = f.busybox("trunc", NAME);
    let len = fs::metadata(&img.archive).unwrap().len();
    let truncated = f.dir.join("truncated.tar");
    fs::copy(&img.archive, &truncated).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = f.store.load(&truncated, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("loading {}: ", truncated.display())),
        "{msg}"
    );
    assert!(msg.contains("truncated"), "{msg}");
    assert_eq!(f.snapshot(), before);

    // A blob whose content does not match its digest (same size), as a dir and an archive.
    let img = f.busybox("corrupt", NAME);
    let blob = &img.layer_blobs[0];
    let mut bytes = fs::read(blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(blob, &bytes).unwrap();
    let err = load_problem(f.store.load(&img.layout_dir, None).unwrap_err());
    assert!(matches!(err, LoadProblem::DigestMismatch { .. }), "{err:?}");
    assert!(
        err.to_string().contains("does not match its digest"),
        "{err}"
    );
    write_archive(&img.layout_dir, &img.archive).unwrap();
    let err = load_problem(f.store.load(&img.archive, None).unwrap_err());
    assert!(matches!(err, LoadProblem::DigestMismatch { .. }), "{err:?}");
    assert_eq!(f.snapshot(), before);

    // A blob shorter than its descriptor says.
    fs::write(blob, &bytes[..10]).unwrap();
    let err = load_problem(f.store.load(&img.layout_dir, None).unwrap_err());
    assert!(matches!(err, LoadProblem::BlobTruncated { .. }), "{err:?}");
    fs::remove_file(blob).unwrap();
    let err = load_problem(f.store.load(&img.layout_dir, None).unwrap_err());
    assert!(matches!(err, LoadProblem::BlobMissing { .. }), "{err:?}");
    assert_eq!(f.snapshot(), before);

    // No index.json: in a directory, and in an archive.
    let img = f.busybox("noindex", NAME);
    fs::remove_file(img.layout_dir.join("index.json")).unwrap();
    let err = f.store.load(&img.layout_dir, None).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("not an OCI archive or layout: no index.json"),
        "{err}"
    );
    let not_oci = f.dir.join("not-oci.tar");
    let mut b = tar::Builder::new(fs::File::create(&not_oci).unwrap());
    b.append_path_with_name(img.layout_dir.join("oci-layout"), "oci-layout")
        .unwrap();
    b.into_inner().unwrap();
    let err = load_problem(f.store.load(&not_oci, None).unwrap_err());
    assert!(matches!(err, LoadProblem::NotOci(_)), "{err:?}");
    let garbage = f.dir.join("garbage.tar");
    fs::write(&garbage, vec![7u8; 4096]).unwrap();
    assert!(f.store.load(&garbage, None).is_err());
    assert!(f.store.load(&f.dir.join("absent.tar"), None).is_err());
    assert_eq!(f.snapshot(), before);

    // Path traversal and absolute paths inside a layer.
    for (i, hostile) in ["../evil", "bin/../../evil", "/evil"]
        .into_iter()
        .enumerate()
    {
        let mut l = LayerBuilder::new();
        l.file("ok", 0o644, b"fine").unwrap();
        l.raw_file(hostile, b"pwned").unwrap();
        let img = f.image(
            &format!("hostile{i}"),
            Some("evil:1"),
            &[TestLayer::gzip(l.finish().unwrap())],
        );
        let err = load_problem(f.store.load(&img.archive, None).unwrap_err());
        assert!(
            matches!(err, LoadProblem::UnsafeEntry { .. }),
            "{hostile}: {err:?}"
        );
        assert!(err.to_string().contains(hostile), "{err}");
        assert_eq!(f.snapshot(), before);
    }
    assert!(!f.dir.join("evil").exists());
    assert!(!f.store.root().join("evil").exists());
    assert!(!f.store.root().join("tmp/evil").exists());
    assert!(!Path::new("/evil").exists());

    // A symlink pointing out of the layer, then a file written through it.
    let mut l = LayerBuilder::new();
    l.symlink("out", &f.dir.display().to_string()).unwrap();
    l.file("out/escaped", 0o644, b"pwned").unwrap();
    let img = f.image(
        "symlink",
        Some("evil:2"),
        &[TestLayer::gzip(l.finish().unwrap())],
    );
    let err = load_problem(f.store.load(&img.layout_dir, None).unwrap_err());
    assert!(matches!(err, LoadProblem::Unpack { .. }), "{err:?}");
    assert!(!f.dir.join("escaped").exists());
    assert_eq!(f.snapshot(), before);

    // zstd layers are refused by media type.
    let zstd = TestLayer {
        tar: busybox_layer().unwrap(),
        gzip: false,
        media_type: Some("application/vnd.oci.image.layer.v1.tar+zstd".into()),
    };
    let img = f.image("zstd", Some("z:1"), &[zstd]);
    let err = load_problem(f.store.load(&img.layout_dir, None).unwrap_err());
    assert!(
        matches!(err, LoadProblem::UnsupportedLayer { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("zstd"), "{err}");
    assert_eq!(f.snapshot(), before);

    // A config whose diff id does not match the layer.
    let img = f.busybox("diffid", "d:1");
    let (manifest_path, config_path) = manifest_and_config(&img);
    let config = fs::read_to_string(&config_path).unwrap();
    let layer_diff = config.split("\"diff_ids\":[\"").nth(1).unwrap()[..71].to_string();
    let wrong = config.replace(&layer_diff, &format!("sha256:{}", "0".repeat(64)));
    rewrite_config(&img, &manifest_path, &config_path, &wrong);
    let err = load_problem(f.store.load(&img.layout_dir, None).unwrap_err());
    assert!(matches!(err, LoadProblem::DiffIdMismatch { .. }), "{err:?}");
    assert_eq!(f.snapshot(), before);
}

/// The manifest and config blob paths of a single-image layout.
fn manifest_and_config(img: &TestImage) -> (PathBuf, PathBuf) {
    let blobs = img.layout_dir.join("blobs/sha256");
    let m = blobs.join(img.manifest_digest.strip_prefix("sha256:").unwrap());
    let c = blobs.join(img.id.strip_prefix("sha256:").unwrap());
    (m, c)
}

/// Replaces a layout's config with `config`, fixing the manifest and index digests.
fn rewrite_config(img: &TestImage, manifest_path: &Path, config_path: &Path, config: &str) {
    use sha2::{Digest, Sha256};
    let blobs = img.layout_dir.join("blobs/sha256");
    let new_cfg_hex = format!("{:x}", Sha256::digest(config.as_bytes()));
    fs::write(blobs.join(&new_cfg_hex), config).unwrap();
    let old_cfg_hex = config_path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let manifest = fs::read_to_string(manifest_path).unwrap();
    let old_size = format!("\"size\":{}", fs::metadata(config_path).unwrap().len());
    let manifest = manifest.replace(&old_cfg_hex, &new_cfg_hex).replacen(
        &old_size,
        &format!("\"size\":{}", config.len()),
        1,
    );
    let new_m_hex = format!("{:x}", Sha256::digest(manifest.as_bytes()));
    fs::write(blobs.join(&new_m_hex), &manifest).unwrap();
    let old_m_hex = manifest_path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let index = fs::read_to_string(img.layout_dir.join("index.json")).unwrap();
    let old_m_size = format!("\"size\":{}", fs::metadata(manifest_path).unwrap().len());
    let index = index
        .replace(&old_m_hex, &new_m_hex)
        .replace(&old_m_size, &format!("\"size\":{}", manifest.len()));
    fs::write(img.layout_dir.join("index.json"), index).unwrap();
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root (mknod of whiteouts, trusted.* xattrs)");
        return;
    }
    let f = fixture();
    let mut l1 = LayerBuilder::new();
    l1.dir("a", 0o755).unwrap();
    l1.file("a/keep", 0o644, b"keep").unwrap();
    l1.file("a/gone", 0o644, b"gone").unwrap();
    l1.dir("o", 0o750).unwrap();
    l1.file("o/old", 0o644, b"old").unwrap();
    l1.file_owned("owned", 0o4711, 1000, 1001, b"x").unwrap();
    let mut l2 = LayerBuilder::new();
    l2.dir("a", 0o755).unwrap();
    l2.file("a/.wh.gone", 0o644, b"").unwrap();
    l2.dir("o", 0o750).unwrap();
    l2.file("o/.wh..wh..opq", 0o644, b"").unwrap();
    l2.file("o/new", 0o644, b"new").unwrap();
    l2.file("newdir/.wh.x", 0o644, b"").unwrap();
    let img = f.image(
        "wh",
        Some("wh:1"),
        &[
            TestLayer::gzip(l1.finish().unwrap()),
            TestLayer::gzip(l2.finish().unwrap()),
        ],
    );
    f.store.load(&img.archive, None).unwrap();
    let image = f.store.get("wh:1").unwrap();
    assert_eq!(image.layers.len(), 2);
    let (lower, upper) = (&image.layers[0], &image.layers[1]);

    assert!(lower.join("a/gone").is_file());
    let owned = fs::metadata(lower.join("owned")).unwrap();
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (1000, 1001, 0o4711)
    );
    assert_eq!(
        fs::metadata(lower.join("o")).unwrap().mode() & 0o7777,
        0o750
    );

    let wh = fs::symlink_metadata(upper.join("a/gone")).unwrap();
    assert!(wh.file_type().is_char_device(), "{wh:?}");
    assert_eq!(wh.rdev(), 0);
    assert_eq!((wh.uid(), wh.gid()), (0, 0));
    assert!(!upper.join("a/.wh.gone").exists());
    assert!(!upper.join("a/keep").exists());
    assert!(fs::symlink_metadata(upper.join("newdir/x"))
        .unwrap()
        .file_type()
        .is_char_device());

    assert_eq!(
        super::unpack::get_xattr(&upper.join("o"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert!(super::unpack::get_xattr(&lower.join("o"), "trusted.overlay.opaque").is_err());
    assert!(!upper.join("o/.wh..wh..opq").exists());
    assert_eq!(fs::read(upper.join("o/new")).unwrap(), b"new");
}

#[test]
fn remove_keeps_shared_layers_and_respects_in_use() {
    let f = fixture();
    let bb = f.busybox("bb", "a:1");
    f.store.load(&bb.archive, None).unwrap();
    let extra = one_file("extra", 0o644, b"extra");
    let two = f.image(
        "two",
        Some("b:1"),
        &[
            TestLayer::gzip(busybox_layer().unwrap()),
            TestLayer::gzip(extra),
        ],
    );
    f.store.load(&two.layout_dir, None).unwrap();
    assert_eq!(f.layer_dirs().len(), 2);
    let shared = f.store.get("a:1").unwrap().layers[0].clone();
    assert_eq!(f.store.get("b:1").unwrap().layers[0], shared);

    let before = f.snapshot();
    let err = f
        .store
        .remove("a:1", |img| {
            assert_eq!(img.name, "a:1");
            Some("task a.1".to_string())
        })
        .unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }), "{err:?}");
    assert!(err.to_string().contains("a:1"), "{err}");
    assert!(err.to_string().contains("in use by task a.1"), "{err}");
    assert_eq!(f.snapshot(), before);
    assert!(matches!(
        f.store.remove("nothere:1", |_| None),
        Err(ImageError::NotFound(_))
    ));

    let removed = f.store.remove("a:1", |_| None).unwrap();
    assert_eq!(removed.name, "a:1");
    assert_eq!(removed.id, bb.id);
    let names: Vec<String> = f
        .store
        .list()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["b:1".to_string()]);
    assert!(shared.join("bin/busybox").exists(), "shared layer kept");
    assert_eq!(f.layer_dirs().len(), 2);

    // Two names for one id: removing by id is ambiguous, by name fine.
    f.store.load(&two.archive, Some("c:1")).unwrap();
    let hex = two.id.strip_prefix("sha256:").unwrap();
    assert!(matches!(
        f.store.remove(&hex[..12], |_| None),
        Err(ImageError::Ambiguous { .. })
    ));
    f.store.remove("c:1", |_| None).unwrap();
    assert_eq!(f.layer_dirs().len(), 2);
    // Now by id prefix: the last image goes, and with it every layer and config.
    f.store.remove(&hex[..12], |_| None).unwrap();
    assert!(f.store.list().unwrap().is_empty());
    assert!(f.layer_dirs().is_empty());
    assert_eq!(
        fs::read_dir(f.store.root().join("configs"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn store_reopens_with_its_images() {
    let f = fixture();
    let img = f.busybox("img", NAME);
    f.store.load(&img.layout_dir, None).unwrap();
    let again = ImageStore::open(f.store.root()).unwrap();
    check_busybox(&again, &img);
}

fn user_root(dir: &Path, passwd: &str, group: &str) -> PathBuf {
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/passwd"), passwd).unwrap();
    fs::write(dir.join("etc/group"), group).unwrap();
    dir.to_path_buf()
}

#[test]
fn resolves_users() {
    let tmp = tempfile::tempdir().unwrap();
    let root = user_root(&tmp.path().join("r"), PASSWD, GROUP);
    let roots = vec![root];
    let r = |spec: &str| resolve_user(spec, &roots);
    let ids = |spec: &str| {
        let u = r(spec).unwrap();
        (u.uid, u.gid, u.additional_gids)
    };
    assert_eq!(ids(""), (0, 0, vec![10]));
    assert_eq!(ids("root"), (0, 0, vec![10]));
    assert_eq!(ids("0"), (0, 0, vec![10]));
    assert_eq!(ids("app"), (1000, 1000, vec![10, 29]));
    assert_eq!(ids("1000"), (1000, 1000, vec![10, 29]));
    assert_eq!(ids("app:audio"), (1000, 29, vec![10]));
    assert_eq!(ids("app:0"), (1000, 0, vec![10, 29]));
    assert_eq!(ids("1000:wheel"), (1000, 10, vec![29]));
    assert_eq!(ids("nobody"), (65534, 65534, vec![]));
    assert_eq!(ids("4242"), (4242, 0, vec![]));
    assert_eq!(ids("4242:4243"), (4242, 4243, vec![]));
    assert!(matches!(r("ghost"), Err(ImageError::UnknownUser { user, .. }) if user == "ghost"));
    assert!(
        matches!(r("app:ghosts"), Err(ImageError::UnknownGroup { group, .. }) if group == "ghosts")
    );
    assert!(r("ghost").unwrap_err().to_string().contains("ghost"));
    for bad in ["a:b:c", "app:", ":app", "99999999999"] {
        assert!(
            matches!(r(bad), Err(ImageError::InvalidUser { .. })),
            "{bad}"
        );
    }

    // Layers: the topmost etc/passwd wins; a layer without etc is skipped.
    let lower = user_root(&tmp.path().join("lower"), PASSWD, GROUP);
    let upper = user_root(
        &tmp.path().join("upper"),
        "root:x:0:0::/:/bin/sh\nweb:x:33:34::/:/bin/sh\n",
        "root:x:0:\nwww:x:34:\n",
    );
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let layers = vec![lower.clone(), upper, empty];
    let u = resolve_user("web", &layers).unwrap();
    assert_eq!((u.uid, u.gid), (33, 34));
    assert!(matches!(
        resolve_user("app", &layers),
        Err(ImageError::UnknownUser { .. })
    ));
    // Numeric ids need no files at all.
    let nothing = vec![tmp.path().join("nothing")];
    assert_eq!(resolve_user("7:8", &nothing).unwrap().gid, 8);
    assert!(matches!(
        resolve_user("app", &nothing),
        Err(ImageError::UnknownUser { .. })
    ));

    // A symlinked passwd (which could point anywhere on the host) is not followed.
    let sym = tmp.path().join("sym");
    fs::create_dir_all(sym.join("etc")).unwrap();
    std::os::unix::fs::symlink(lower.join("etc/passwd"), sym.join("etc/passwd")).unwrap();
    assert!(resolve_user("app", &[sym]).is_err());

    // The host.
    assert_eq!(resolve_user("root", &[PathBuf::from("/")]).unwrap().uid, 0);
}

#[test]
fn resolves_users_in_a_loaded_image() {
    let f = fixture();
    let img = f.busybox("img", NAME);
    f.store.load(&img.archive, None).unwrap();
    let image = f.store.get(NAME).unwrap();
    let u = resolve_user("app", &image.layers).unwrap();
    assert_eq!(
        (u.uid, u.gid, u.additional_gids),
        (1000, 1000, vec![10, 29])
    );
}

#[test]
fn multi_arch_index_picks_this_platform() {
    use sha2::{Digest, Sha256};
    let f = fixture();
    let img = f.busybox("multi", NAME);
    // Wrap the manifest in a nested index next to a foreign-arch entry.
    let blobs = img.layout_dir.join("blobs/sha256");
    let (manifest_path, _) = manifest_and_config(&img);
    let msize = fs::metadata(&manifest_path).unwrap().len();
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": format!("sha256:{}", "1".repeat(64)), "size": 10,
             "platform": {"architecture": "s390x", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": img.manifest_digest, "size": msize,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": format!("sha256:{}", "2".repeat(64)), "size": 10,
             "platform": {"architecture": "arm64", "os": "linux"}},
        ]
    });
    let bytes = serde_json::to_vec(&nested).unwrap();
    let hex = format!("{:x}", Sha256::digest(&bytes));
    fs::write(blobs.join(&hex), &bytes).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"), "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": NAME},
        }]
    });
    fs::write(
        img.layout_dir.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("SKIP: the test image is amd64");
        return;
    }
    f.store.load(&img.layout_dir, None).unwrap();
    check_busybox(&f.store, &img);
}

#[test]
fn config_without_runtime_section() {
    let f = fixture();
    let layer = one_file("f", 0o600, b"f");
    let img = f.image("bare", Some("bare:1"), &[TestLayer::gzip(layer)]);
    f.store.load(&img.layout_dir, None).unwrap();
    let image = f.store.get("bare:1").unwrap();
    assert_eq!(image.config, ImageConfig::default());
    assert_eq!(f.store.list().unwrap()[0].size, 1);
    assert_eq!(
        fs::metadata(image.layers[0].join("f")).unwrap().mode() & 0o777,
        0o600
    );
}

/// Runs skopeo (Debian's `skopeo`) if this machine has it; `None` (and a loud SKIP) if not.
fn skopeo(args: &[&str]) -> Option<()> {
    let out = match std::process::Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIP: skopeo not runnable ({e})");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(())
}

#[test]
fn loads_what_skopeo_writes() {
    let f = fixture();
    let img = f.busybox("img", NAME);
    let src = format!("oci:{}:{NAME}", img.layout_dir.display());
    let archive = f.dir.join("skopeo.tar");
    let dest = format!("oci-archive:{}:web:2", archive.display());
    if skopeo(&["copy", &src, &dest]).is_none() {
        return;
    }
    let loaded = f.store.load(&archive, None).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].name, "web:2");
    assert_eq!(loaded[0].id, img.id);

    // `oci:DIR:latest` names only a tag: a name must be given.
    let dir = f.dir.join("skopeo-dir");
    let dest = format!("oci:{}:latest", dir.display());
    skopeo(&["copy", &src, &dest]).unwrap();
    let err = load_problem(f.store.load(&dir, None).unwrap_err());
    assert!(matches!(err, LoadProblem::NoName), "{err:?}");
    assert_eq!(f.store.load(&dir, Some("web:3")).unwrap()[0].id, img.id);
    assert_eq!(f.layer_dirs().len(), 1);

    // umoci, another reader of OCI layouts, accepts the test image as well.
    let bundle = f.dir.join("bundle");
    let image = format!("{}:latest", dir.display());
    match std::process::Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "umoci: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(bundle.join("rootfs/bin/busybox").is_file());
        }
        Err(e) => eprintln!("SKIP: umoci not runnable ({e})"),
    }
}
