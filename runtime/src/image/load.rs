//! Reading an OCI image layout (a directory, or an oci-archive tar extracted into the
//! store's staging area): index.json, the manifests and configs it leads to, and the layer
//! blobs, each verified against its descriptor's size and sha256 digest.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use oci_spec::image::{
    Descriptor, DigestAlgorithm, ImageConfiguration, ImageIndex, ImageManifest, MediaType,
};
use sha2::{Digest, Sha256};

use super::error::LoadProblem;
use super::reference::{annotation_name, normalize_reference};
use super::unpack::Compression;
use super::ImageError;

/// The annotation naming an image in index.json.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The full name containerd and `docker save` put beside a tag-only ref.name.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Manifests, configs and indexes larger than this are refused (layers have no limit).
const MAX_JSON_BLOB: u64 = 8 << 20;
/// How deep image indexes may nest.
const MAX_INDEX_DEPTH: usize = 4;

/// One layer of an image to load.
#[derive(Debug, Clone)]
pub(crate) struct LayerPlan {
    pub blob: PathBuf,
    pub digest: String,
    pub compression: Compression,
    /// The config's diff id for this layer, hex without `sha256:`.
    pub diff_id_hex: String,
}

/// One image found in the source, verified up to its layer blobs' digests.
#[derive(Debug)]
pub(crate) struct Found {
    pub name: String,
    /// Config digest hex (the image id without `sha256:`).
    pub config_hex: String,
    pub config: ImageConfiguration,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<LayerPlan>,
}

/// Reads every image of `source` (a layout dir or an archive, which is extracted into
/// `staging`). `tag` names the only image when given.
pub(crate) fn read_source(
    source: &Path,
    staging: &Path,
    tag: Option<&str>,
) -> Result<Vec<Found>, ImageError> {
    let load = |problem| ImageError::Load {
        from: source.to_path_buf(),
        problem,
    };
    let tag = match tag {
        Some(t) => Some(normalize_reference(t)?),
        None => None,
    };
    let meta = fs::metadata(source).map_err(|e| load(LoadProblem::io("opening", source, e)))?;
    let layout = if meta.is_dir() {
        source.to_path_buf()
    } else {
        let dir = staging.join("archive");
        extract_archive(source, &dir).map_err(load)?;
        dir
    };
    read_layout(&layout, tag).map_err(load)
}

/// The Go name of this machine's CPU architecture, as image platforms spell it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "arm" => "arm",
        other => other,
    }
}

fn platform_matches(desc: &Descriptor) -> bool {
    desc.platform().as_ref().is_some_and(|p| {
        p.os().to_string() == "linux" && p.architecture().to_string() == host_arch()
    })
}

fn is_manifest(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageManifest)
        || matches!(mt, MediaType::Other(s) if s == "application/vnd.docker.distribution.manifest.v2+json")
}

fn is_index(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageIndex)
        || matches!(mt, MediaType::Other(s) if s == "application/vnd.docker.distribution.manifest.list.v2+json")
}

struct Layout<'a> {
    dir: &'a Path,
    /// Blobs already checked (digest strings).
    verified: HashSet<String>,
}

fn read_layout(dir: &Path, tag: Option<String>) -> Result<Vec<Found>, LoadProblem> {
    let index_path = dir.join("index.json");
    if !index_path.is_file() {
        return Err(LoadProblem::NotOci("no index.json".into()));
    }
    let layout_file = dir.join("oci-layout");
    let header =
        fs::read(&layout_file).map_err(|_| LoadProblem::NotOci("no oci-layout file".into()))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| LoadProblem::NotOci(format!("oci-layout is not JSON: {e}")))?;
    if header
        .get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .is_none()
    {
        return Err(LoadProblem::NotOci(
            "oci-layout has no imageLayoutVersion".into(),
        ));
    }
    let bytes = read_limited(&index_path)?;
    let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| LoadProblem::Malformed {
        what: "image index",
        digest: "index.json".into(),
        reason: e.to_string(),
    })?;
    let mut layout = Layout {
        dir,
        verified: HashSet::new(),
    };

    // Each top-level entry leads to one manifest (an index in it is resolved by platform).
    let mut entries: Vec<(Option<String>, Descriptor, Descriptor)> = Vec::new();
    for desc in index.manifests() {
        let name = entry_name(desc)?;
        if let Some(manifest) = layout.resolve(desc, 0)? {
            entries.push((name, desc.clone(), manifest));
        }
    }
    // Several entries with the same name (or none): keep this platform's.
    let mut groups: BTreeMap<Option<String>, Vec<(Descriptor, Descriptor)>> = BTreeMap::new();
    for (name, top, manifest) in entries {
        let group = groups.entry(name).or_default();
        if !group
            .iter()
            .any(|(_, m)| m.digest().to_string() == manifest.digest().to_string())
        {
            group.push((top, manifest));
        }
    }
    let mut chosen: Vec<(Option<String>, Descriptor)> = Vec::new();
    for (name, group) in groups {
        let manifest = if group.len() == 1 {
            group.into_iter().next().map(|(_, m)| m)
        } else {
            let mut matching: Vec<Descriptor> = group
                .into_iter()
                .filter(|(top, m)| platform_matches(top) || platform_matches(m))
                .map(|(_, m)| m)
                .collect();
            if matching.len() != 1 {
                return Err(LoadProblem::NoPlatform {
                    digest: "index.json".into(),
                    platform: format!(
                        "linux/{} ({} candidates named {})",
                        host_arch(),
                        matching.len(),
                        name.as_deref().unwrap_or("nothing")
                    ),
                });
            }
            matching.pop()
        };
        if let Some(m) = manifest {
            chosen.push((name, m));
        }
    }
    if chosen.is_empty() {
        return Err(LoadProblem::Empty);
    }

    let named: Vec<(String, Descriptor)> = match tag {
        Some(tag) => {
            let distinct: HashSet<String> =
                chosen.iter().map(|(_, m)| m.digest().to_string()).collect();
            if distinct.len() != 1 {
                return Err(LoadProblem::TagNeedsOne {
                    count: distinct.len(),
                });
            }
            chosen
                .into_iter()
                .take(1)
                .map(|(_, m)| (tag.clone(), m))
                .collect()
        }
        None => {
            let mut named = Vec::new();
            for (name, m) in chosen {
                match name {
                    Some(n) => named.push((n, m)),
                    None => return Err(LoadProblem::NoName),
                }
            }
            named
        }
    };

    let mut found = Vec::new();
    for (name, manifest) in named {
        found.push(layout.image(name, &manifest)?);
    }
    Ok(found)
}

/// The image name an index.json entry carries, if any.
fn entry_name(desc: &Descriptor) -> Result<Option<String>, LoadProblem> {
    let Some(ann) = desc.annotations() else {
        return Ok(None);
    };
    if let Some(full) = ann.get(CONTAINERD_NAME) {
        if let Some(name) = annotation_name(full)? {
            return Ok(Some(name));
        }
    }
    match ann.get(REF_NAME) {
        Some(v) => annotation_name(v),
        None => Ok(None),
    }
}

impl Layout<'_> {
    /// The manifest a descriptor leads to: itself, or this platform's in an index. `None` for
    /// content that is not an image (artifacts, attestations).
    fn resolve(
        &mut self,
        desc: &Descriptor,
        depth: usize,
    ) -> Result<Option<Descriptor>, LoadProblem> {
        let mt = desc.media_type();
        if is_manifest(mt) {
            return Ok(Some(desc.clone()));
        }
        if !is_index(mt) {
            tracing::debug!(digest = %desc.digest(), media_type = %mt, "skipping non-image entry");
            return Ok(None);
        }
        let digest = desc.digest().to_string();
        if depth >= MAX_INDEX_DEPTH {
            return Err(LoadProblem::Malformed {
                what: "image index",
                digest,
                reason: "indexes nest too deep".into(),
            });
        }
        let bytes = self.json_blob(desc)?;
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| LoadProblem::Malformed {
                what: "image index",
                digest: digest.clone(),
                reason: e.to_string(),
            })?;
        let images: Vec<&Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| is_manifest(d.media_type()) || is_index(d.media_type()))
            .collect();
        let pick = if images.len() == 1 {
            images.first().copied()
        } else {
            images.iter().copied().find(|d| platform_matches(d))
        };
        match pick {
            Some(d) => self.resolve(d, depth + 1),
            None => Err(LoadProblem::NoPlatform {
                digest,
                platform: format!("linux/{}", host_arch()),
            }),
        }
    }

    /// Reads a manifest and its config, and verifies its layer blobs.
    fn image(&mut self, name: String, manifest_desc: &Descriptor) -> Result<Found, LoadProblem> {
        let mdigest = manifest_desc.digest().to_string();
        let bytes = self.json_blob(manifest_desc)?;
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| LoadProblem::Malformed {
                what: "manifest",
                digest: mdigest.clone(),
                reason: e.to_string(),
            })?;
        let config_desc = manifest.config();
        let cdigest = config_desc.digest().to_string();
        let config_bytes = self.json_blob(config_desc)?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|e| LoadProblem::Malformed {
                what: "image config",
                digest: cdigest.clone(),
                reason: e.to_string(),
            })?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(LoadProblem::LayerCount {
                manifest: mdigest,
                layers: manifest.layers().len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let digest = desc.digest().to_string();
            let compression =
                Compression::of_media_type(desc.media_type().as_ref()).map_err(|reason| {
                    LoadProblem::UnsupportedLayer {
                        digest: digest.clone(),
                        media_type: desc.media_type().to_string(),
                        reason,
                    }
                })?;
            let diff_id_hex = sha256_hex_of(diff_id).ok_or_else(|| LoadProblem::Malformed {
                what: "image config",
                digest: cdigest.clone(),
                reason: format!("diff id {diff_id:?} is not sha256:<64 hex>"),
            })?;
            let blob = self.verify(desc)?;
            layers.push(LayerPlan {
                blob,
                digest,
                compression,
                diff_id_hex: diff_id_hex.to_string(),
            });
        }
        let config_hex = sha256_hex_of(&cdigest).unwrap_or_default().to_string();
        Ok(Found {
            name,
            config_hex,
            config,
            config_bytes,
            layers,
        })
    }

    /// A small JSON blob's bytes, verified.
    fn json_blob(&mut self, desc: &Descriptor) -> Result<Vec<u8>, LoadProblem> {
        if desc.size() > MAX_JSON_BLOB {
            return Err(LoadProblem::Malformed {
                what: "descriptor of",
                digest: desc.digest().to_string(),
                reason: format!("{} bytes is too large for JSON", desc.size()),
            });
        }
        let path = self.verify(desc)?;
        fs::read(&path).map_err(|e| LoadProblem::io("reading", path, e))
    }

    /// Checks a blob's size and sha256 digest against its descriptor; its path.
    fn verify(&mut self, desc: &Descriptor) -> Result<PathBuf, LoadProblem> {
        let digest = desc.digest().to_string();
        if *desc.digest().algorithm() != DigestAlgorithm::Sha256 {
            return Err(LoadProblem::UnsupportedDigest { digest });
        }
        let hex = desc.digest().digest();
        if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(LoadProblem::UnsupportedDigest { digest });
        }
        let path = self.dir.join("blobs").join("sha256").join(hex);
        if self.verified.contains(&digest) {
            return Ok(path);
        }
        let meta = match fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Err(LoadProblem::BlobMissing { digest }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LoadProblem::BlobMissing { digest })
            }
            Err(e) => return Err(LoadProblem::io("reading", path, e)),
        };
        let expected = desc.size();
        if meta.len() < expected {
            return Err(LoadProblem::BlobTruncated {
                digest,
                actual: meta.len(),
                expected,
            });
        }
        if meta.len() > expected {
            return Err(LoadProblem::BlobSize {
                digest,
                actual: meta.len(),
                expected,
            });
        }
        let file = File::open(&path).map_err(|e| LoadProblem::io("opening", &path, e))?;
        let mut hasher = Sha256::new();
        let mut reader = BufReader::new(file);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| LoadProblem::io("reading", &path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let actual = format!("{:x}", hasher.finalize());
        if actual != hex {
            return Err(LoadProblem::DigestMismatch { digest, actual });
        }
        self.verified.insert(digest);
        Ok(path)
    }
}

/// The hex of a `sha256:<64 hex>` string.
pub(crate) fn sha256_hex_of(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
    .then_some(hex)
}

/// Extracts an oci-archive (tar, maybe gzip-compressed) into `dst`: only directories and
/// regular files, at plain relative paths.
/// The tar crate's message may quote the archive's bytes: say what kind of failure it was,
/// in printable text only.
fn bad_tar(e: std::io::Error) -> LoadProblem {
    let msg: String = e
        .to_string()
        .chars()
        .map(|c| {
            if c.is_control() || c == char::REPLACEMENT_CHARACTER {
                '?'
            } else {
                c
            }
        })
        .take(120)
        .collect();
    LoadProblem::BadArchive(format!("not a readable tar archive ({msg})"))
}

fn extract_archive(archive: &Path, dst: &Path) -> Result<(), LoadProblem> {
    let mut file = File::open(archive).map_err(|e| LoadProblem::io("opening", archive, e))?;
    let mut magic = [0u8; 4];
    let got =
        read_up_to(&mut file, &mut magic).map_err(|e| LoadProblem::io("reading", archive, e))?;
    let file = File::open(archive).map_err(|e| LoadProblem::io("opening", archive, e))?;
    let reader: Box<dyn Read> = if got >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(MultiGzDecoder::new(BufReader::new(file)))
    } else if got == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        return Err(LoadProblem::NotOci(
            "a zstd-compressed archive (not supported; use a plain or gzip-compressed tar)".into(),
        ));
    } else {
        Box::new(BufReader::new(file))
    };
    fs::create_dir_all(dst).map_err(|e| LoadProblem::io("creating", dst, e))?;
    let mut tar = tar::Archive::new(reader);
    let entries = tar.entries().map_err(bad_tar)?;
    let mut count = 0usize;
    for entry in entries {
        let mut entry = entry.map_err(bad_tar)?;
        count += 1;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = entry
            .path()
            .map_err(|e| LoadProblem::BadArchive(format!("entry {raw:?}: {e}")))?
            .into_owned();
        let mut rel = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(p) => rel.push(p),
                Component::CurDir => {}
                _ => {
                    return Err(LoadProblem::BadArchiveEntry {
                        entry: raw,
                        reason: "absolute paths and `..` are not allowed",
                    })
                }
            }
        }
        let kind = entry.header().entry_type();
        let target = dst.join(&rel);
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(|e| LoadProblem::io("creating", &target, e))?;
            continue;
        }
        if !kind.is_file() && kind != tar::EntryType::Continuous {
            continue; // links, devices, pax headers: not part of an image layout
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| LoadProblem::io("creating", parent, e))?;
        }
        let expected = entry.header().size().unwrap_or(0);
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    LoadProblem::BadArchiveEntry {
                        entry: raw.clone(),
                        reason: "it appears twice",
                    }
                } else {
                    LoadProblem::io("creating", &target, e)
                }
            })?;
        let truncated = |raw: &str, detail: String| match blob_digest_of(raw) {
            Some(digest) => LoadProblem::ArchiveBlobTruncated { digest },
            None => LoadProblem::BadArchive(format!("entry {raw:?}: {detail}")),
        };
        let copied = match io::copy(&mut entry, &mut out) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(truncated(&raw, e.to_string()))
            }
            Err(e) => return Err(LoadProblem::BadArchive(format!("entry {raw:?}: {e}"))),
        };
        if copied != expected {
            return Err(match blob_digest_of(&raw) {
                Some(digest) => LoadProblem::BlobTruncated {
                    digest,
                    actual: copied,
                    expected,
                },
                None => LoadProblem::BadArchive(format!(
                    "entry {raw:?} is truncated ({copied} of {expected} bytes)"
                )),
            });
        }
    }
    if count == 0 {
        return Err(LoadProblem::NotOci("an empty archive".into()));
    }
    Ok(())
}

/// `sha256:<hex>` when an archive entry is a blob.
fn blob_digest_of(entry: &str) -> Option<String> {
    let rest = entry.trim_start_matches("./").strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    Some(format!("{alg}:{hex}"))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn read_limited(path: &Path) -> Result<Vec<u8>, LoadProblem> {
    let meta = fs::metadata(path).map_err(|e| LoadProblem::io("reading", path, e))?;
    if meta.len() > MAX_JSON_BLOB {
        return Err(LoadProblem::NotOci(format!(
            "{} is {} bytes, too large",
            path.display(),
            meta.len()
        )));
    }
    fs::read(path).map_err(|e| LoadProblem::io("reading", path, e))
}
