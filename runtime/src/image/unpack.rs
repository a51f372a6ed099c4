//! Unpacking one layer blob into a plain directory tree that overlayfs can use as a lowerdir.
//!
//! Safety against hostile layers: an entry with an absolute path or a `..` component is
//! refused (the tar crate would skip it silently); regular files, directories, symlinks and
//! hard links go through the tar crate's `unpack_in`, which creates missing parents only
//! after checking (by canonicalising) that the parent resolves inside the layer directory,
//! replaces an existing file or symlink at the target instead of writing through it, and
//! checks that a hard link's target resolves inside the layer directory. Entries the tar
//! crate would write as regular files (devices, fifos) and OCI whiteouts are made here,
//! under parents walked component by component that must be real directories, never
//! symlinks.
//!
//! OCI whiteouts become overlayfs whiteouts: `.wh.NAME` is a 0:0 character device `NAME`,
//! and `.wh..wh..opq` is the xattr `trusted.overlay.opaque=y` on its directory. Ownership is
//! kept when running as root (which mknod and trusted xattrs need anyway); modes and mtimes
//! always. Xattrs in the layer are not applied.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};

use super::error::LoadProblem;

/// How a layer blob is compressed (from its media type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
}

impl Compression {
    /// The compression a layer media type says, or why the layer cannot be used.
    pub(crate) fn of_media_type(media_type: &str) -> Result<Compression, &'static str> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            t if t.ends_with("+zstd") || t.ends_with(".zstd") => {
                Err("zstd-compressed layers are not supported (recompress with gzip, e.g. skopeo copy --dest-compress-format gzip)")
            }
            _ => Err("not a layer media type this store knows (tar or tar+gzip)"),
        }
    }
}

/// What unpacking a layer found.
#[derive(Debug)]
pub(crate) struct Unpacked {
    /// sha256 of the uncompressed tar, hex.
    pub diff_id_hex: String,
    /// Bytes of regular file content.
    pub size: u64,
}

/// A reader that hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks the layer blob at `blob` (named `digest` in errors) into the existing empty
/// directory `dst`, returning the diff id of its uncompressed content.
pub(crate) fn unpack_layer(
    blob: &Path,
    compression: Compression,
    digest: &str,
    dst: &Path,
) -> Result<Unpacked, LoadProblem> {
    let file = File::open(blob).map_err(|e| LoadProblem::io("opening", blob, e))?;
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(BufReader::new(file)),
        Compression::Gzip => Box::new(MultiGzDecoder::new(BufReader::new(file))),
    };
    let mut hashing = Hashing {
        inner: reader,
        hasher: Sha256::new(),
    };
    let mut layer = Layer {
        digest,
        dst,
        root: nix::unistd::geteuid().is_root(),
        whiteouts: HashSet::new(),
        dirs: Vec::new(),
        size: 0,
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_preserve_ownerships(layer.root);
        archive.set_unpack_xattrs(false);
        archive.set_overwrite(true);
        let entries = archive
            .entries()
            .map_err(|e| layer.err("(reading the tar)", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| layer.err("(reading the tar)", e))?;
            layer.entry(&mut entry)?;
        }
    }
    // The tar reader stops at the end-of-archive blocks: hash whatever follows too.
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| layer.err("(reading the tar)", e))?;
    layer.finish_dirs()?;
    Ok(Unpacked {
        diff_id_hex: format!("{:x}", hashing.hasher.finalize()),
        size: layer.size,
    })
}

struct Layer<'a> {
    digest: &'a str,
    dst: &'a Path,
    root: bool,
    /// Whiteout devices made in this layer (relative paths), replaced if the layer itself
    /// then writes the same path.
    whiteouts: HashSet<PathBuf>,
    /// Directories and their mtimes, set again at the end (writing into them changes it).
    dirs: Vec<(PathBuf, u64)>,
    size: u64,
}

impl Layer<'_> {
    fn err(&self, entry: &str, source: io::Error) -> LoadProblem {
        LoadProblem::Unpack {
            digest: self.digest.to_string(),
            entry: entry.to_string(),
            source,
        }
    }

    fn unsafe_entry(&self, entry: &str, reason: &'static str) -> LoadProblem {
        LoadProblem::UnsafeEntry {
            digest: self.digest.to_string(),
            entry: entry.to_string(),
            reason,
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), LoadProblem> {
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = entry.path().map_err(|e| self.err(&raw, e))?.into_owned();
        let rel = self.relative(&raw, &path)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let Some(name) = rel.file_name() else {
            // The layer's root itself (`./`): keep its mode and owner.
            if kind.is_dir() {
                self.set_meta(&raw, self.dst, entry.header())?;
            }
            return Ok(());
        };
        let name = name.as_bytes().to_vec();
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if name == b".wh..wh..opq" {
            let dir = self.make_parents(&raw, &parent)?;
            set_opaque(&dir).map_err(|e| self.err(&raw, e))?;
            return Ok(());
        }
        if name.starts_with(b".wh..wh.") {
            return Ok(()); // aufs bookkeeping (e.g. `.wh..wh.plnk`), not part of the tree
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            if hidden.is_empty() {
                return Err(self.unsafe_entry(&raw, "a whiteout without a name"));
            }
            let dir = self.make_parents(&raw, &parent)?;
            let target = dir.join(OsStr::from_bytes(hidden));
            if target.symlink_metadata().is_ok() {
                return Ok(()); // this layer has the path itself: content in the same layer wins
            }
            mknod(&target, SFlag::S_IFCHR, 0, 0).map_err(|e| self.err(&raw, e))?;
            self.whiteouts
                .insert(parent.join(OsStr::from_bytes(hidden)));
            return Ok(());
        }
        if self.whiteouts.remove(&rel) {
            let at = self.dst.join(&rel);
            fs::remove_file(&at).map_err(|e| self.err(&raw, e))?;
        }
        let header = entry.header().clone();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let dir = self.make_parents(&raw, &parent)?;
            let target = dir.join(OsStr::from_bytes(&name));
            if let Ok(meta) = target.symlink_metadata() {
                if meta.is_dir() {
                    return Err(self.unsafe_entry(&raw, "a device would replace a directory"));
                }
                fs::remove_file(&target).map_err(|e| self.err(&raw, e))?;
            }
            let flag = if kind.is_character_special() {
                SFlag::S_IFCHR
            } else if kind.is_block_special() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFIFO
            };
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            mknod(&target, flag, major, minor).map_err(|e| self.err(&raw, e))?;
            return self.set_meta(&raw, &target, &header);
        }
        if kind.is_file() || kind == tar::EntryType::Continuous {
            self.size += header.size().unwrap_or(0);
        }
        let done = entry.unpack_in(self.dst).map_err(|e| self.err(&raw, e))?;
        if !done {
            return Err(self.unsafe_entry(&raw, "the tar crate refused to unpack it"));
        }
        if kind.is_dir() {
            if let Ok(mtime) = header.mtime() {
                self.dirs.push((rel, mtime));
            }
        }
        Ok(())
    }

    /// The entry's path as plain components, refusing absolute paths and `..`.
    fn relative(&self, raw: &str, path: &Path) -> Result<PathBuf, LoadProblem> {
        let mut rel = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(part) => rel.push(part),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.unsafe_entry(raw, "absolute paths are not allowed in layers"))
                }
                Component::ParentDir => {
                    return Err(self.unsafe_entry(raw, "`..` is not allowed in layer paths"))
                }
            }
        }
        Ok(rel)
    }

    /// Creates the directories of `rel` under the layer dir, each a real directory (an
    /// existing symlink or file on the way is refused); the full path.
    fn make_parents(&self, raw: &str, rel: &Path) -> Result<PathBuf, LoadProblem> {
        let mut at = self.dst.to_path_buf();
        for c in rel.components() {
            at.push(c);
            match at.symlink_metadata() {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(self
                        .unsafe_entry(raw, "its directory is a symlink or a file in this layer"))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&at).map_err(|e| self.err(raw, e))?;
                    fs::set_permissions(&at, fs::Permissions::from_mode(0o755))
                        .map_err(|e| self.err(raw, e))?;
                }
                Err(e) => return Err(self.err(raw, e)),
            }
        }
        Ok(at)
    }

    /// Owner (as root), mode and mtime of a node made here (not a symlink).
    fn set_meta(&self, raw: &str, at: &Path, header: &tar::Header) -> Result<(), LoadProblem> {
        if self.root {
            let uid = header.uid().map_err(|e| self.err(raw, e))?;
            let gid = header.gid().map_err(|e| self.err(raw, e))?;
            let uid = u32::try_from(uid).map_err(|_| self.unsafe_entry(raw, "uid out of range"))?;
            let gid = u32::try_from(gid).map_err(|_| self.unsafe_entry(raw, "gid out of range"))?;
            std::os::unix::fs::lchown(at, Some(uid), Some(gid)).map_err(|e| self.err(raw, e))?;
        }
        if let Ok(mode) = header.mode() {
            fs::set_permissions(at, fs::Permissions::from_mode(mode & 0o7777))
                .map_err(|e| self.err(raw, e))?;
        }
        if let Ok(mtime) = header.mtime() {
            set_mtime(at, mtime).map_err(|e| self.err(raw, e))?;
        }
        Ok(())
    }

    /// Sets each directory's mtime again, deepest first.
    fn finish_dirs(&mut self) -> Result<(), LoadProblem> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
        for (rel, mtime) in dirs {
            let at = self.dst.join(&rel);
            // Only a real directory (a later entry may have replaced it).
            if at.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                set_mtime(&at, mtime).map_err(|e| self.err(&rel.to_string_lossy(), e))?;
            }
        }
        Ok(())
    }
}

fn mknod(at: &Path, kind: SFlag, major: u32, minor: u32) -> io::Result<()> {
    let dev = libc::makedev(major, minor);
    nix::sys::stat::mknod(at, kind, Mode::empty(), dev).map_err(io::Error::from)
}

fn set_mtime(at: &Path, mtime: u64) -> io::Result<()> {
    let secs = i64::try_from(mtime).unwrap_or(i64::MAX);
    let ts = TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        at,
        &ts,
        &ts,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Marks a directory opaque for overlayfs.
fn set_opaque(dir: &Path) -> io::Result<()> {
    set_xattr(dir, "trusted.overlay.opaque", b"y")
}

fn set_xattr(at: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let path = CString::new(at.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let name = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; value/len describe a
    // valid slice.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an xattr (tests look for the opaque mark).
#[cfg(test)]
pub(crate) fn get_xattr(at: &Path, name: &str) -> io::Result<Vec<u8>> {
    let path = CString::new(at.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let name = CString::new(name).map_err(io::Error::other)?;
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings; buf is valid for buf.len() bytes.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Removes a tree that may hold read-only directories (made writable on the way down,
/// never following symlinks). Absent is fine.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    make_writable(path)?;
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn make_writable(dir: &Path) -> io::Result<()> {
    let meta = match dir.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Ok(());
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}
