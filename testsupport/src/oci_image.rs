//! Small OCI images for tests, built on the spot without a registry: an image layout
//! directory (`oci-layout`, `index.json`, `blobs/sha256/...`) and the same layout as an
//! oci-archive tar, with real sha256 digests, sizes and diff ids.
//!
//! [`build_busybox_image`] makes the image most tests run: Debian's `busybox-static` with a
//! symlink per applet, a passwd/group with `root`, `nobody` and `app`, and a default command
//! that serves the container's hostname over HTTP on port 80. [`write_image`] writes any
//! set of layers, for tests that need odd or hostile content.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

/// Where an image was written.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The OCI image layout directory (`dir/layout`).
    pub layout_dir: PathBuf,
    /// The same layout as an oci-archive tar (`dir/image.tar`).
    pub archive: PathBuf,
    /// The image id: the config blob's digest, `sha256:...`.
    pub id: String,
    /// The manifest blob's digest.
    pub manifest_digest: String,
    /// Each layer blob inside `layout_dir`, bottom first (tests corrupt them).
    pub layer_blobs: Vec<PathBuf>,
}

/// One layer of a test image: an uncompressed tar, stored gzip-compressed or as is.
#[derive(Debug, Clone)]
pub struct TestLayer {
    pub tar: Vec<u8>,
    pub gzip: bool,
    /// Overrides the layer's media type in the manifest (e.g. to claim zstd).
    pub media_type: Option<String>,
}

impl TestLayer {
    /// A gzip-compressed layer with the standard OCI media type.
    pub fn gzip(tar: Vec<u8>) -> TestLayer {
        TestLayer {
            tar,
            gzip: true,
            media_type: None,
        }
    }
}

/// The runtime configuration a test image carries.
#[derive(Debug, Clone, Default)]
pub struct TestConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
}

/// The busybox image's configuration: no entrypoint, a shell line serving `hostname` on :80.
pub fn busybox_config() -> TestConfig {
    TestConfig {
        entrypoint: Vec::new(),
        cmd: vec![
            "/bin/sh".into(),
            "-c".into(),
            "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www"
                .into(),
        ],
        env: vec!["PATH=/bin".into(), "IMAGE_ENV=from-image".into()],
        working_dir: Some("/".into()),
        user: None,
        exposed_ports: vec!["80/tcp".into()],
    }
}

/// `/etc/passwd` of the test images.
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
app:x:1000:1000:app:/home/app:/bin/sh\n";

/// `/etc/group` of the test images (`app` is also in `wheel` and `audio`).
pub const GROUP: &str = "root:x:0:\n\
wheel:x:10:root,app\n\
audio:x:29:app\n\
nogroup:x:65534:\n\
app:x:1000:\n";

/// Builds the busybox test image at `dir/layout` and `dir/image.tar`, named `name` (the
/// `org.opencontainers.image.ref.name` annotation, e.g. `rmtest/busybox:1`).
pub fn build_busybox_image(dir: &Path, name: &str) -> io::Result<TestImage> {
    let layer = busybox_layer()?;
    write_image(
        dir,
        Some(name),
        &[TestLayer::gzip(layer)],
        &busybox_config(),
    )
}

/// The busybox layer as an uncompressed tar.
pub fn busybox_layer() -> io::Result<Vec<u8>> {
    let busybox = fs::read("/bin/busybox")?;
    let mut b = LayerBuilder::new();
    for d in [
        "bin", "etc", "dev", "proc", "sys", "root", "home", "home/app",
    ] {
        b.dir(d, 0o755)?;
    }
    b.dir("tmp", 0o1777)?;
    b.file("bin/busybox", 0o755, &busybox)?;
    let mut applets = applets()?;
    for wanted in [
        "sh", "httpd", "hostname", "id", "ps", "cat", "ls", "echo", "sleep", "mount", "ip", "wget",
        "nc", "grep", "head", "dd", "env", "pwd", "whoami",
    ] {
        if !applets.iter().any(|a| a == wanted) {
            applets.push(wanted.to_string());
        }
    }
    applets.sort();
    applets.dedup();
    for applet in applets.iter().filter(|a| a.as_str() != "busybox") {
        b.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    b.file("etc/passwd", 0o644, PASSWD.as_bytes())?;
    b.file("etc/group", 0o644, GROUP.as_bytes())?;
    b.finish()
}

/// The applets `/bin/busybox --list` names (plain names without slashes only).
fn applets() -> io::Result<Vec<String>> {
    let out = Command::new("/bin/busybox").arg("--list").output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "/bin/busybox --list: {}",
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('/') && l.bytes().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .collect())
}

/// Writes tar entries for a test layer (owned by root, mtime fixed).
pub struct LayerBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        LayerBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(size);
        h
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut h, format!("{path}/"), io::empty())?;
        Ok(self)
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<&mut Self> {
        self.file_owned(path, mode, 0, 0, data)
    }

    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> io::Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.builder.append_data(&mut h, path, data)?;
        Ok(self)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder.append_link(&mut h, path, target)?;
        Ok(self)
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> io::Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.builder.append_link(&mut h, path, target)?;
        Ok(self)
    }

    /// An entry whose name is written as given, unchecked (for hostile archives: `../evil`,
    /// `/abs`), which the tar crate's own setters refuse.
    pub fn raw_file(&mut self, raw_name: &str, data: &[u8]) -> io::Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        let name = raw_name.as_bytes();
        if name.len() > 99 {
            return Err(io::Error::other("raw name too long"));
        }
        let bytes = h.as_mut_bytes();
        bytes[..100].fill(0);
        bytes[..name.len()].copy_from_slice(name);
        h.set_cksum();
        self.builder.append(&h, data)?;
        Ok(self)
    }

    /// The finished tar.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        self.builder.into_inner()
    }
}

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// Writes `data` as a blob of the layout; its digest `sha256:...`.
fn put_blob(layout: &Path, data: &[u8]) -> io::Result<(String, PathBuf)> {
    let hex = sha256_hex(data);
    let path = layout.join("blobs").join("sha256").join(&hex);
    fs::write(&path, data)?;
    Ok((format!("sha256:{hex}"), path))
}

/// Writes an image of `layers` (bottom first) and `config` as a layout directory at
/// `dir/layout` and an oci-archive at `dir/image.tar`. `name` becomes the ref.name annotation
/// of index.json's only manifest (none when `None`).
pub fn write_image(
    dir: &Path,
    name: Option<&str>,
    layers: &[TestLayer],
    config: &TestConfig,
) -> io::Result<TestImage> {
    let layout = dir.join("layout");
    if layout.exists() {
        fs::remove_dir_all(&layout)?;
    }
    fs::create_dir_all(layout.join("blobs").join("sha256"))?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;

    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_blobs = Vec::new();
    for layer in layers {
        diff_ids.push(format!("sha256:{}", sha256_hex(&layer.tar)));
        let (blob, default_type) = if layer.gzip {
            let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&layer.tar)?;
            (gz.finish()?, "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (layer.tar.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let (digest, path) = put_blob(&layout, &blob)?;
        layer_blobs.push(path);
        layer_descs.push(serde_json::json!({
            "mediaType": layer.media_type.as_deref().unwrap_or(default_type),
            "digest": digest,
            "size": blob.len(),
        }));
    }

    let mut cfg = serde_json::Map::new();
    if !config.entrypoint.is_empty() {
        cfg.insert("Entrypoint".into(), serde_json::json!(config.entrypoint));
    }
    if !config.cmd.is_empty() {
        cfg.insert("Cmd".into(), serde_json::json!(config.cmd));
    }
    if !config.env.is_empty() {
        cfg.insert("Env".into(), serde_json::json!(config.env));
    }
    if let Some(wd) = &config.working_dir {
        cfg.insert("WorkingDir".into(), serde_json::json!(wd));
    }
    if let Some(user) = &config.user {
        cfg.insert("User".into(), serde_json::json!(user));
    }
    if !config.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, serde_json::Value> = config
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), serde_json::json!({})))
            .collect();
        cfg.insert("ExposedPorts".into(), serde_json::Value::Object(ports));
    }
    let config_json = serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": cfg,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": [{ "created": "2024-01-01T00:00:00Z", "created_by": "routemesh testsupport" }],
    });
    let config_bytes = serde_json::to_vec(&config_json).map_err(io::Error::other)?;
    let (config_digest, _) = put_blob(&layout, &config_bytes)?;

    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": layer_descs,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
    let (manifest_digest, _) = put_blob(&layout, &manifest_bytes)?;

    let mut desc = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest,
        "size": manifest_bytes.len(),
        "platform": { "architecture": "amd64", "os": "linux" },
    });
    if let Some(name) = name {
        desc["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": name });
    }
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [desc] });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).map_err(io::Error::other)?,
    )?;

    let archive = dir.join("image.tar");
    write_archive(&layout, &archive)?;
    Ok(TestImage {
        layout_dir: layout,
        archive,
        id: config_digest,
        manifest_digest,
        layer_blobs,
    })
}

/// Packs a layout directory as an oci-archive (plain tar, entries relative to the layout).
pub fn write_archive(layout: &Path, archive: &Path) -> io::Result<()> {
    let mut b = tar::Builder::new(fs::File::create(archive)?);
    b.mode(tar::HeaderMode::Deterministic);
    b.append_path_with_name(layout.join("oci-layout"), "oci-layout")?;
    b.append_path_with_name(layout.join("index.json"), "index.json")?;
    b.append_dir("blobs", layout.join("blobs"))?;
    b.append_dir("blobs/sha256", layout.join("blobs").join("sha256"))?;
    let mut blobs: Vec<_> = fs::read_dir(layout.join("blobs").join("sha256"))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|e| e.file_name())
        .collect();
    blobs.sort();
    for blob in blobs {
        let name = Path::new("blobs").join("sha256").join(&blob);
        b.append_path_with_name(layout.join(&name), &name)?;
    }
    b.into_inner()?.sync_all()
}
