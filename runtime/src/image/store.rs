//! The store itself: its index, loads that change nothing until they succeeded, lookups by
//! name or id, and removal that keeps shared layers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::error::LoadProblem;
use super::load::{read_source, Found};
use super::reference::{id_ref, normalize_reference, IdRef};
use super::unpack::{remove_tree, unpack_layer};
use super::{Image, ImageConfig, ImageError, ImageSummary};

/// The index format version this code writes and reads.
const INDEX_VERSION: u32 = 1;

/// A store of OCI images rooted at one directory (see the module docs for its layout).
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// `<root>/index.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    version: u32,
    /// By normalised name.
    images: BTreeMap<String, Record>,
    /// Unpacked size of each layer in `layers/`, by diff id hex.
    layers: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// `sha256:<config digest hex>`.
    id: String,
    /// Diff id hex of each layer, bottom first.
    layers: Vec<String>,
    config: ImageConfig,
    created: Option<String>,
}

/// Holds the store's flock until dropped (closing the file releases it).
struct Lock {
    _file: File,
}

static STAGING: AtomicU64 = AtomicU64::new(0);

impl ImageStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<ImageStore, ImageError> {
        let store = ImageStore { root: root.into() };
        for dir in [
            store.root.clone(),
            store.layers_dir(),
            store.configs_dir(),
            store.tmp_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(|e| ImageError::io("creating", &dir, e))?;
        }
        // Fail early on an index this code cannot read.
        store.read_index()?;
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn configs_dir(&self) -> PathBuf {
        self.root.join("configs")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Loads every image of an OCI archive (a tar, maybe gzip-compressed, holding an image
    /// layout) or an OCI image layout directory. Names come from index.json's
    /// `org.opencontainers.image.ref.name` (or containerd's `io.containerd.image.name`)
    /// annotations, or from `tag`, which then must name the source's only image. Every blob
    /// is verified against its descriptor and every layer against the config's diff ids;
    /// nothing in the store changes unless all of it succeeded. A name already in the store
    /// is moved to the loaded image.
    pub fn load(&self, source: &Path, tag: Option<&str>) -> Result<Vec<ImageSummary>, ImageError> {
        let _lock = self.lock()?;
        self.clean_tmp();
        let n = STAGING.fetch_add(1, Ordering::Relaxed);
        let staging = self
            .tmp_dir()
            .join(format!("load-{}-{n}", std::process::id()));
        fs::create_dir(&staging).map_err(|e| ImageError::io("creating", &staging, e))?;
        let result = self.load_staged(source, tag, &staging);
        if let Err(e) = remove_tree(&staging) {
            tracing::warn!(path = %staging.display(), error = %e, "removing load staging dir");
        }
        result
    }

    fn load_staged(
        &self,
        source: &Path,
        tag: Option<&str>,
        staging: &Path,
    ) -> Result<Vec<ImageSummary>, ImageError> {
        let load_err = |problem| ImageError::Load {
            from: source.to_path_buf(),
            problem,
        };
        let found = read_source(source, staging, tag)?;
        let mut index = self.read_index()?;

        // Unpack the layers the store lacks into staging, checking each diff id.
        let staged = staging.join("layers");
        fs::create_dir(&staged).map_err(|e| ImageError::io("creating", &staged, e))?;
        let mut new_layers: BTreeMap<String, u64> = BTreeMap::new();
        for image in &found {
            for layer in &image.layers {
                let hex = &layer.diff_id_hex;
                if new_layers.contains_key(hex)
                    || (index.layers.contains_key(hex) && self.layers_dir().join(hex).is_dir())
                {
                    continue;
                }
                let dst = staged.join(hex);
                fs::create_dir(&dst).map_err(|e| ImageError::io("creating", &dst, e))?;
                fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))
                    .map_err(|e| ImageError::io("setting the mode of", &dst, e))?;
                tracing::debug!(layer = %layer.digest, diff_id = %hex, "unpacking layer");
                let unpacked = unpack_layer(&layer.blob, layer.compression, &layer.digest, &dst)
                    .map_err(load_err)?;
                if unpacked.diff_id_hex != *hex {
                    return Err(load_err(LoadProblem::DiffIdMismatch {
                        digest: layer.digest.clone(),
                        expected: format!("sha256:{hex}"),
                        actual: unpacked.diff_id_hex,
                    }));
                }
                new_layers.insert(hex.clone(), unpacked.size);
            }
        }

        // The new index.
        let mut summaries = Vec::new();
        for image in &found {
            let record = Record {
                id: format!("sha256:{}", image.config_hex),
                layers: image.layers.iter().map(|l| l.diff_id_hex.clone()).collect(),
                config: ImageConfig::from_oci(&image.config),
                created: image.config.created().clone(),
            };
            index.images.insert(image.name.clone(), record);
        }
        index
            .layers
            .extend(new_layers.iter().map(|(k, v)| (k.clone(), *v)));
        for image in &found {
            if let Some(record) = index.images.get(&image.name) {
                summaries.push(summary(&index, &image.name, record));
            }
        }

        // Commit: configs, then layers, then the index; layers moved are moved back on failure
        // (a config file left behind is unreferenced and deleted by the next collection).
        let mut moved = Vec::new();
        let committed = (|| {
            for image in &found {
                self.write_config(image)?;
            }
            for hex in new_layers.keys() {
                let to = self.layers_dir().join(hex);
                if to.symlink_metadata().is_ok() {
                    // Left by a crash between rename and index write: not in the index.
                    remove_tree(&to).map_err(|e| ImageError::io("removing", &to, e))?;
                }
                let from = staged.join(hex);
                fs::rename(&from, &to)
                    .map_err(|e| ImageError::io("renaming into place", &to, e))?;
                moved.push((from, to));
            }
            self.write_index(&index)
        })();
        if let Err(e) = committed {
            for (from, to) in moved.iter().rev() {
                if let Err(err) = fs::rename(to, from) {
                    tracing::warn!(path = %to.display(), error = %err, "rolling back a layer");
                }
            }
            return Err(e);
        }
        // Names moved to the new image may have left layers and configs unused.
        if let Err(e) = self.collect_garbage(&mut index) {
            tracing::warn!(error = %e, "deleting unused layers after a load");
        }
        for s in &summaries {
            tracing::info!(name = %s.name, id = %s.id, size = s.size, "image loaded");
        }
        Ok(summaries)
    }

    /// Every image, by name.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let index = self.read_index()?;
        Ok(index
            .images
            .iter()
            .map(|(name, record)| summary(&index, name, record))
            .collect())
    }

    /// An image by name (normalised: `web` is `web:latest`) or by id (`sha256:<hex>` or a
    /// unique hex prefix of at least 12 characters). [`ImageError::NotFound`] when absent.
    pub fn get(&self, reference: &str) -> Result<Image, ImageError> {
        let index = self.read_index()?;
        let (name, record) = self.find(&index, reference, false)?;
        Ok(self.image(&name, &record))
    }

    /// Removes the name `reference` gives (by id only when exactly one name has that id),
    /// unless `used_by` names what uses the image ([`ImageError::InUse`]); then deletes layers
    /// and the config no other image uses.
    pub fn remove(
        &self,
        reference: &str,
        used_by: impl Fn(&Image) -> Option<String>,
    ) -> Result<ImageSummary, ImageError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let (name, record) = self.find(&index, reference, true)?;
        let image = self.image(&name, &record);
        if let Some(user) = used_by(&image) {
            return Err(ImageError::InUse {
                name,
                id: record.id,
                by: user,
            });
        }
        let removed = summary(&index, &name, &record);
        index.images.remove(&name);
        self.write_index(&index)?;
        if let Err(e) = self.collect_garbage(&mut index) {
            tracing::warn!(error = %e, "deleting unused layers after a removal");
        }
        tracing::info!(name = %removed.name, id = %removed.id, "image removed");
        Ok(removed)
    }

    /// The record a reference names: a name first, then an id or id prefix. With
    /// `one_name`, an id that several names share is ambiguous.
    fn find(
        &self,
        index: &Index,
        reference: &str,
        one_name: bool,
    ) -> Result<(String, Record), ImageError> {
        let name = normalize_reference(reference);
        if let Ok(name) = &name {
            if let Some(record) = index.images.get(name) {
                return Ok((name.clone(), record.clone()));
            }
        }
        let Some(idref) = id_ref(reference) else {
            return match name {
                Ok(_) => Err(ImageError::NotFound(reference.to_string())),
                Err(e) => Err(e),
            };
        };
        let matches: Vec<(&String, &Record)> = index
            .images
            .iter()
            .filter(|(_, r)| {
                let hex = r.id.strip_prefix("sha256:").unwrap_or(&r.id);
                match idref {
                    IdRef::Full(full) => hex == full,
                    IdRef::Prefix(prefix) => hex.starts_with(prefix),
                }
            })
            .collect();
        let ids: BTreeSet<&str> = matches.iter().map(|(_, r)| r.id.as_str()).collect();
        if ids.len() > 1 {
            return Err(ImageError::Ambiguous {
                reference: reference.to_string(),
                matches: ids.into_iter().collect::<Vec<_>>().join(", "),
            });
        }
        if one_name && matches.len() > 1 {
            return Err(ImageError::Ambiguous {
                reference: reference.to_string(),
                matches: format!(
                    "the names {} (remove one by name)",
                    matches
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        match matches.first() {
            Some((name, record)) => Ok(((*name).clone(), (*record).clone())),
            None => Err(ImageError::NotFound(reference.to_string())),
        }
    }

    fn image(&self, name: &str, record: &Record) -> Image {
        Image {
            name: name.to_string(),
            id: record.id.clone(),
            layers: record
                .layers
                .iter()
                .map(|hex| self.layers_dir().join(hex))
                .collect(),
            config: record.config.clone(),
        }
    }

    /// Deletes layers and configs no image uses (and strays a crash left in `layers/`).
    /// The index is written first, so a failure here leaves only unreferenced files.
    fn collect_garbage(&self, index: &mut Index) -> Result<(), ImageError> {
        let used_layers: BTreeSet<&String> = index
            .images
            .values()
            .flat_map(|r| r.layers.iter())
            .collect();
        let orphans: Vec<String> = index
            .layers
            .keys()
            .filter(|hex| !used_layers.contains(hex))
            .cloned()
            .collect();
        if !orphans.is_empty() {
            for hex in &orphans {
                index.layers.remove(hex);
            }
            self.write_index(index)?;
        }
        let layers_dir = self.layers_dir();
        let entries =
            fs::read_dir(&layers_dir).map_err(|e| ImageError::io("reading", &layers_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::io("reading", &layers_dir, e))?;
            let hex = entry.file_name().to_string_lossy().into_owned();
            if index.layers.contains_key(&hex) {
                continue;
            }
            let trash = self.tmp_dir().join(format!(
                "trash-{}-{}",
                std::process::id(),
                STAGING.fetch_add(1, Ordering::Relaxed)
            ));
            let path = entry.path();
            fs::rename(&path, &trash).map_err(|e| ImageError::io("removing", &path, e))?;
            tracing::debug!(layer = %hex, "deleting unused layer");
            remove_tree(&trash).map_err(|e| ImageError::io("removing", &trash, e))?;
        }
        let used_configs: BTreeSet<String> = index
            .images
            .values()
            .map(|r| format!("{}.json", r.id.strip_prefix("sha256:").unwrap_or(&r.id)))
            .collect();
        let configs_dir = self.configs_dir();
        let entries =
            fs::read_dir(&configs_dir).map_err(|e| ImageError::io("reading", &configs_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::io("reading", &configs_dir, e))?;
            if !used_configs.contains(&*entry.file_name().to_string_lossy()) {
                let path = entry.path();
                fs::remove_file(&path).map_err(|e| ImageError::io("removing", &path, e))?;
            }
        }
        Ok(())
    }

    fn write_config(&self, image: &Found) -> Result<(), ImageError> {
        let path = self
            .configs_dir()
            .join(format!("{}.json", image.config_hex));
        if path.is_file() {
            return Ok(());
        }
        write_atomically(&path, &image.config_bytes)
    }

    fn read_index(&self) -> Result<Index, ImageError> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Index {
                    version: INDEX_VERSION,
                    ..Index::default()
                })
            }
            Err(e) => return Err(ImageError::io("reading", &path, e)),
        };
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| ImageError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if index.version != INDEX_VERSION {
            return Err(ImageError::Corrupt {
                path,
                reason: format!(
                    "index version {} (this build reads {INDEX_VERSION})",
                    index.version
                ),
            });
        }
        Ok(index)
    }

    fn write_index(&self, index: &Index) -> Result<(), ImageError> {
        let path = self.index_path();
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| ImageError::Corrupt {
            path: path.clone(),
            reason: format!("serialising: {e}"),
        })?;
        write_atomically(&path, &bytes)
    }

    fn lock(&self) -> Result<Lock, ImageError> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ImageError::io("opening", &path, e))?;
        loop {
            // SAFETY: flock on a file descriptor this function owns.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Lock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(ImageError::io("locking", &path, err));
            }
        }
    }

    /// Deletes what earlier loads and removals left in `tmp/` (the lock is held, so none is
    /// running). Failures are only logged: they leave garbage, not a wrong store.
    fn clean_tmp(&self) {
        let tmp = self.tmp_dir();
        let Ok(entries) = fs::read_dir(&tmp) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Err(e) = remove_tree(&path) {
                tracing::warn!(path = %path.display(), error = %e, "removing stale temp dir");
            }
        }
    }
}

fn summary(index: &Index, name: &str, record: &Record) -> ImageSummary {
    ImageSummary {
        name: name.to_string(),
        id: record.id.clone(),
        size: record
            .layers
            .iter()
            .filter_map(|hex| index.layers.get(hex))
            .sum(),
        created: record.created.clone(),
    }
}

/// Writes `path` through a temp file in the same directory and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(ImageError::io("writing", &tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(ImageError::io("renaming into place", path, e));
    }
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
