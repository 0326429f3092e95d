//! Content-addressed storage of function code: keeps each uploaded ZIP and a safely extracted copy of it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use condo_types::Limits;
use sha2::{Digest, Sha256};
use zip::{CompressionMethod, ZipArchive};

/// Prefix of everything in the root that is not (yet, or any more) a complete package.
const PARTIAL_PREFIX: &str = ".partial-";
/// Longest entry name accepted, in bytes (Linux's PATH_MAX).
const MAX_NAME_BYTES: usize = 4096;
/// Longest path component accepted, in bytes (Linux's NAME_MAX).
const MAX_COMPONENT_BYTES: usize = 255;
/// Longest symlink target accepted: PATH_MAX less the terminating NUL.
const MAX_LINK_TARGET_BYTES: u64 = 4095;
/// Decompression buffer; big enough to keep syscalls few, small enough to overshoot a limit by little.
const COPY_BUF_BYTES: usize = 64 * 1024;

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

const EOCD_SIG: [u8; 4] = *b"PK\x05\x06";
const EOCD64_LOCATOR_SIG: [u8; 4] = *b"PK\x06\x07";
const EOCD64_SIG: [u8; 4] = *b"PK\x06\x06";
const CENTRAL_HEADER_SIG: [u8; 4] = *b"PK\x01\x02";
const EOCD_LEN: usize = 22;
const CENTRAL_HEADER_LEN: usize = 46;

/// Makes temp names unique within the process; the pid makes them unique across processes.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Why a package could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("Zipped size must be at most {limit} bytes (got {size})")]
    TooLarge { size: usize, limit: usize },
    #[error("Could not unzip uploaded file: {0}")]
    InvalidZip(String),
    #[error("Could not unzip uploaded file: entry '{name}' rejected: {reason}")]
    UnsafeEntry { name: String, reason: &'static str },
    #[error("Unzipped size must be smaller than {} bytes", Limits::UNZIPPED_BYTES)]
    UnzippedTooLarge,
    #[error(
        "Could not unzip uploaded file: more than {} entries",
        Limits::ZIP_ENTRIES
    )]
    TooManyEntries,
    #[error("code store I/O error: {0}")]
    Io(#[from] io::Error),
}

impl CodeError {
    fn unsafe_entry(name: &str, reason: &'static str) -> Self {
        Self::UnsafeEntry {
            name: name.to_owned(),
            reason,
        }
    }
}

/// A package that is fully in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCode {
    /// Lowercase hex SHA-256 of the zip; the package's name in the store.
    pub code_id: String,
    /// Base64 of the raw SHA-256 digest, as Lambda reports `CodeSha256`.
    pub sha256_base64: String,
    pub zip_size: u64,
    /// The extracted tree.
    pub dir: PathBuf,
}

/// The content-addressed code store rooted at `<data dir>/code`.
///
/// Layout under the root:
///
/// * `<id>.zip`: the package exactly as uploaded, where `<id>` is the lowercase hex SHA-256 of its bytes;
/// * `<id>/`: the extracted tree, which the sandbox exposes to the function;
/// * `.partial-*`: work in progress (a tree being extracted or removed, a zip being written).
///
/// A package counts as stored only once both `<id>.zip` and `<id>/` exist. Both are put in place by
/// `rename`, so a crash leaves at most `.partial-*` leftovers ([`CodeStore::sweep_partial`]) or one half
/// of a package, which the next [`CodeStore::put_zip`] of the same bytes completes. No fsync is done on
/// the extracted files (it would cost one per file); the zip itself and the root directory are synced.
///
/// Uploads come from anyone who can call the API, so extraction treats the archive as hostile: sizes
/// are counted as they are decompressed rather than taken from headers, every name is checked before
/// anything is written, and nothing is ever written through a symlink.
#[derive(Debug, Clone)]
pub struct CodeStore {
    root: PathBuf,
}

impl CodeStore {
    /// Opens the store, creating its directory if needed.
    pub fn open(root: PathBuf) -> Result<Self, CodeError> {
        fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    /// Validates and stores a zip, returning the stored package.
    ///
    /// Writes `<root>/<id>.zip` and extracts to `<root>/<id>/`. Storing the same bytes again reuses what is
    /// there. The tree is extracted into a temp dir beside its final place and renamed into place at the
    /// end, so the final name never holds a half tree; a rejected archive leaves nothing behind.
    pub fn put_zip(&self, zip: &[u8]) -> Result<StoredCode, CodeError> {
        if zip.len() > Limits::ZIP_BYTES {
            return Err(CodeError::TooLarge {
                size: zip.len(),
                limit: Limits::ZIP_BYTES,
            });
        }
        let digest = Sha256::digest(zip);
        let code_id = hex::encode(digest);
        let stored = StoredCode {
            sha256_base64: base64::engine::general_purpose::STANDARD.encode(digest),
            zip_size: zip.len() as u64,
            dir: self.root.join(&code_id),
            code_id,
        };
        let have_zip = is_file(&self.root.join(format!("{}.zip", stored.code_id)));
        let have_dir = is_dir(&stored.dir);
        if have_zip && have_dir {
            tracing::debug!(code_id = %stored.code_id, "code package already stored");
            return Ok(stored);
        }

        // A tree under the final name was renamed there whole, so it needs no second extraction; only
        // the zip is missing (a crash between the two renames).
        let staged = if have_dir {
            None
        } else {
            Some(self.extract_to_temp(zip, &stored.code_id)?)
        };
        let result = self.finish_put(&stored.code_id, zip, have_zip, staged.as_ref());
        if let Some(tmp) = &staged {
            // After a successful rename the temp dir is gone; after a lost race or a failure it is not.
            if is_dir(tmp) {
                remove_tree_logged(tmp);
            }
        }
        result?;
        tracing::info!(code_id = %stored.code_id, zip_size = stored.zip_size, "stored code package");
        Ok(stored)
    }

    /// The stored package with this id, if it is complete.
    pub fn get(&self, code_id: &str) -> Option<StoredCode> {
        if !is_code_id(code_id) {
            return None;
        }
        let dir = self.root.join(code_id);
        let zip_meta = fs::symlink_metadata(self.root.join(format!("{code_id}.zip"))).ok()?;
        if !zip_meta.is_file() || !is_dir(&dir) {
            return None;
        }
        let digest = hex::decode(code_id).ok()?;
        Some(StoredCode {
            code_id: code_id.to_owned(),
            sha256_base64: base64::engine::general_purpose::STANDARD.encode(digest),
            zip_size: zip_meta.len(),
            dir,
        })
    }

    /// Where the original zip of this package is, if it is there.
    pub fn zip_path(&self, code_id: &str) -> Option<PathBuf> {
        if !is_code_id(code_id) {
            return None;
        }
        let path = self.root.join(format!("{code_id}.zip"));
        is_file(&path).then_some(path)
    }

    /// Deletes a package. Removing one that is not there is not an error.
    ///
    /// The caller must make sure no `put_zip` of the same package runs at the same time.
    pub fn remove(&self, code_id: &str) -> Result<(), CodeError> {
        if !is_code_id(code_id) {
            // Nothing the store writes can have such a name, so there is nothing to remove.
            tracing::warn!(code_id, "ignoring removal of a malformed code id");
            return Ok(());
        }
        // Rename the tree out of the way first, so that a crash part-way through the deletion leaves a
        // `.partial-*` leftover for sweep_partial rather than a half tree under the final name.
        let dir = self.root.join(code_id);
        let doomed = self.temp_path(code_id, "-rm");
        let moved = match fs::rename(&dir, &doomed) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e.into()),
        };
        match fs::remove_file(self.root.join(format!("{code_id}.zip"))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if moved {
            fs::remove_dir_all(&doomed)?;
        }
        Ok(())
    }

    /// Removes what interrupted puts and removals left behind; returns how many leftovers it removed.
    ///
    /// Meant for startup: run while puts are in progress, it would delete their work.
    pub fn sweep_partial(&self) -> Result<usize, CodeError> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let is_partial = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(PARTIAL_PREFIX));
            if !is_partial {
                continue;
            }
            let path = entry.path();
            // file_type does not follow symlinks, so a planted link is unlinked, never descended into.
            let result = if entry.file_type()?.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match result {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(path = %path.display(), "removed partial code store entry");
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }

    fn temp_path(&self, code_id: &str, suffix: &str) -> PathBuf {
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        self.root.join(format!(
            "{PARTIAL_PREFIX}{code_id}-{}-{seq}{suffix}",
            std::process::id()
        ))
    }

    /// Validates the archive and extracts it into a fresh temp dir, which it returns; on failure,
    /// removes the temp dir.
    fn extract_to_temp(&self, zip: &[u8], code_id: &str) -> Result<PathBuf, CodeError> {
        // Cheap early refusal from the end record, before the zip crate allocates per entry.
        if declared_entry_count(zip).is_some_and(|n| n > Limits::ZIP_ENTRIES as u64) {
            return Err(CodeError::TooManyEntries);
        }
        let mut archive =
            ZipArchive::new(Cursor::new(zip)).map_err(|e| CodeError::InvalidZip(e.to_string()))?;
        if archive.len() > Limits::ZIP_ENTRIES {
            return Err(CodeError::TooManyEntries);
        }
        check_central_directory(zip, archive.central_directory_start(), archive.len())?;
        let plan = plan_extraction(&mut archive)?;

        let tmp = self.temp_path(code_id, "");
        // 0700 while being filled: no one else may read a partial tree or plant anything in it.
        fs::DirBuilder::new().mode(0o700).create(&tmp)?;
        match write_tree(&mut archive, plan, &tmp) {
            Ok(()) => Ok(tmp),
            Err(e) => {
                remove_tree_logged(&tmp);
                Err(e)
            }
        }
    }

    /// Puts the zip (if missing) and then the staged tree (if any) in place.
    fn finish_put(
        &self,
        code_id: &str,
        zip: &[u8],
        have_zip: bool,
        staged: Option<&PathBuf>,
    ) -> Result<(), CodeError> {
        if !have_zip {
            let tmp_zip = self.temp_path(code_id, ".zip");
            let zip_path = self.root.join(format!("{code_id}.zip"));
            let written = write_synced(&tmp_zip, zip).and_then(|()| fs::rename(&tmp_zip, zip_path));
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp_zip);
                return Err(e.into());
            }
        }
        if let Some(tmp) = staged {
            let dir = self.root.join(code_id);
            fs::set_permissions(tmp, Permissions::from_mode(0o755))?;
            if let Err(e) = fs::rename(tmp, &dir) {
                // A concurrent put of the same bytes got there first; its tree is as good as ours.
                if !is_dir(&dir) {
                    return Err(e.into());
                }
            }
        }
        // Make the renames durable; failing to is worth a warning, not a failed upload.
        if let Err(e) = File::open(&self.root).and_then(|d| d.sync_all()) {
            tracing::warn!(error = %e, "could not sync the code store directory");
        }
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    file.write_all(bytes)?;
    file.set_permissions(Permissions::from_mode(0o644))?;
    file.sync_all()
}

fn remove_tree_logged(path: &Path) {
    if let Err(e) = fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), error = %e, "could not remove temporary code directory");
    }
}

fn is_code_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// True for a real directory; a symlink to one does not count.
fn is_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// True for a regular file; a symlink to one does not count.
fn is_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

fn le_u16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(bytes.try_into().ok()?))
}

fn le_u64(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// The entry count claimed by the last end-of-central-directory record, if one can be found.
///
/// Only a fast path: the zip crate parses every central directory entry (about 46 bytes each, so up to a
/// million in 50 MB) before its count can be checked, and this refuses the obvious case first. The
/// authoritative count is [`check_central_directory`]'s.
fn declared_entry_count(zip: &[u8]) -> Option<u64> {
    let lowest = zip.len().saturating_sub(EOCD_LEN + usize::from(u16::MAX));
    let mut at = zip.len().checked_sub(EOCD_LEN)?;
    loop {
        if zip.get(at..at + 4) == Some(&EOCD_SIG[..]) {
            let comment_len = usize::from(le_u16(zip, at + 20)?);
            if at + EOCD_LEN + comment_len <= zip.len() {
                let count = le_u16(zip, at + 10)?;
                if count != u16::MAX {
                    return Some(u64::from(count));
                }
                // 0xFFFF means "see the zip64 record"; if it cannot be found here, say nothing.
                let locator = at.checked_sub(20)?;
                if zip.get(locator..locator + 4) != Some(&EOCD64_LOCATOR_SIG[..]) {
                    return None;
                }
                let eocd64 = usize::try_from(le_u64(zip, locator + 8)?).ok()?;
                if zip.get(eocd64..eocd64.checked_add(4)?) != Some(&EOCD64_SIG[..]) {
                    return None;
                }
                return le_u64(zip, eocd64.checked_add(32)?);
            }
        }
        if at == lowest {
            return None;
        }
        at -= 1;
    }
}

/// Walks the central directory the zip crate chose and checks it holds exactly the entries the crate
/// returned.
///
/// The crate keys entries by name and silently keeps one of several with the same name, so duplicates
/// can only be seen here, in the raw records.
fn check_central_directory(zip: &[u8], start: u64, parsed: usize) -> Result<(), CodeError> {
    let truncated = || CodeError::InvalidZip("truncated central directory".to_owned());
    let mut at = usize::try_from(start).map_err(|_| truncated())?;
    let mut seen = std::collections::HashSet::new();
    let mut count = 0usize;
    while zip.get(at..at + 4) == Some(&CENTRAL_HEADER_SIG[..]) {
        count += 1;
        if count > Limits::ZIP_ENTRIES {
            return Err(CodeError::TooManyEntries);
        }
        let name_len = usize::from(le_u16(zip, at + 28).ok_or_else(truncated)?);
        let extra_len = usize::from(le_u16(zip, at + 30).ok_or_else(truncated)?);
        let comment_len = usize::from(le_u16(zip, at + 32).ok_or_else(truncated)?);
        let name_start = at + CENTRAL_HEADER_LEN;
        let name = zip
            .get(name_start..name_start + name_len)
            .ok_or_else(truncated)?;
        if !seen.insert(name) {
            return Err(CodeError::unsafe_entry(
                &String::from_utf8_lossy(name),
                "duplicate entry name",
            ));
        }
        at = name_start + name_len + extra_len + comment_len;
    }
    if count != parsed {
        // Distinct raw names that decode to one name (invalid UTF-8, CP437), or records past the count
        // the end record gives: either way the archive does not mean what it seems to.
        return Err(CodeError::UnsafeEntry {
            name: String::new(),
            reason: "central directory entries collide or disagree with the entry count",
        });
    }
    Ok(())
}

/// Splits an entry name into path components, refusing anything that could land outside the tree or
/// that different tools would read differently. Returns the components and whether the name ends in `/`.
fn split_name(name: &str) -> Result<(Vec<&str>, bool), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_NAME_BYTES {
        return Err("name longer than 4096 bytes");
    }
    if name.contains('\0') {
        return Err("NUL byte in name");
    }
    // Windows tools may mean `\` as a separator; Linux would take it literally. Refuse the ambiguity.
    if name.contains('\\') {
        return Err("backslash in name");
    }
    if name.starts_with('/') {
        return Err("absolute path");
    }
    let (body, dir_name) = match name.strip_suffix('/') {
        Some(body) => (body, true),
        None => (name, false),
    };
    let mut parts = Vec::new();
    for (i, part) in body.split('/').enumerate() {
        match part {
            "" => return Err("empty path component"),
            // Harmless, and some tools write `./name`; dropping it still lets duplicates be seen.
            "." => {}
            ".." => return Err("parent directory (`..`) component"),
            _ => {
                if part.len() > MAX_COMPONENT_BYTES {
                    return Err("path component longer than 255 bytes");
                }
                let b = part.as_bytes();
                if i == 0 && b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
                    return Err("drive prefix");
                }
                parts.push(part);
            }
        }
    }
    Ok((parts, dir_name))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File { executable: bool },
    Symlink,
}

/// Node of the in-memory model of the tree. Building the tree in memory first lets every conflict
/// (a path both a file and a dir, an entry under a symlink, whatever the entry order) be found before
/// anything is written, and it stores each path component once, so deep names cost linear memory.
struct Node {
    kind: Kind,
    children: HashMap<String, usize>,
    /// Directories only: whether an entry named it (rather than it being implied by a deeper name).
    explicit: bool,
    /// Directories only: whether it has been created on disk yet.
    created: bool,
}

struct Tree {
    nodes: Vec<Node>,
}

const ROOT: usize = 0;

impl Tree {
    fn new() -> Self {
        Self {
            nodes: vec![Node {
                kind: Kind::Dir,
                children: HashMap::new(),
                explicit: true,
                created: true,
            }],
        }
    }

    fn node(&self, id: usize) -> Option<&Node> {
        self.nodes.get(id)
    }

    fn child(&self, parent: usize, name: &str) -> Option<usize> {
        self.node(parent)?.children.get(name).copied()
    }

    fn add_node(&mut self, parent: usize, name: &str, kind: Kind, explicit: bool) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node {
            kind,
            children: HashMap::new(),
            explicit,
            created: false,
        });
        if let Some(p) = self.nodes.get_mut(parent) {
            p.children.insert(name.to_owned(), id);
        }
        id
    }

    /// Adds an entry, creating implied parent directories; returns its node.
    fn insert(&mut self, parts: &[&str], kind: Kind) -> Result<usize, &'static str> {
        let Some((last, parents)) = parts.split_last() else {
            return Err("empty name");
        };
        let mut cur = ROOT;
        for part in parents {
            cur = match self.child(cur, part) {
                Some(id) => match self.node(id).map(|n| n.kind) {
                    Some(Kind::Dir) => id,
                    Some(Kind::Symlink) => return Err("parent path is a symlink"),
                    _ => return Err("parent path is a file"),
                },
                None => self.add_node(cur, part, Kind::Dir, false),
            };
        }
        match self.child(cur, last) {
            None => Ok(self.add_node(cur, last, kind, kind == Kind::Dir)),
            Some(id) => {
                let node = self.nodes.get_mut(id).ok_or("duplicate entry name")?;
                match (node.kind, kind) {
                    (Kind::Dir, Kind::Dir) if !node.explicit => {
                        node.explicit = true;
                        Ok(id)
                    }
                    (Kind::Dir, _) if !node.explicit => Err("path is a directory of other entries"),
                    _ => Err("duplicate entry name"),
                }
            }
        }
    }

    /// Node ids along a path, from the root's child down (as far as the path is in the tree).
    fn chain(&self, parts: &[&str]) -> Vec<usize> {
        let mut chain = Vec::with_capacity(parts.len());
        let mut cur = ROOT;
        for part in parts {
            match self.child(cur, part) {
                Some(id) => {
                    chain.push(id);
                    cur = id;
                }
                None => break,
            }
        }
        chain
    }

    /// Checks a symlink target lexically, against the archive's own tree.
    ///
    /// Absolute targets and targets whose `..`s climb above the root are refused. Lexical resolution
    /// matches the kernel's only while no component it walks through is itself a symlink: with
    /// `a/b/s -> ../..`, a target `a/b/s/../../..` looks like `a` but resolves to the root's parent.
    /// So a symlink in the tree may only be a target's last component; it is then checked on its own.
    fn check_link_target(&self, parts: &[&str], target: &[u8]) -> Result<(), &'static str> {
        if target.is_empty() {
            return Err("empty symlink target");
        }
        if target.contains(&0) {
            return Err("NUL byte in symlink target");
        }
        let target = std::str::from_utf8(target).map_err(|_| "symlink target is not UTF-8")?;
        if target.starts_with('/') {
            return Err("absolute symlink target");
        }
        // Where the walk stands: the nodes from the root down, `None` past the tree's known paths.
        let mut at: Vec<Option<usize>> = self.chain(parts).into_iter().map(Some).collect();
        // Resolution starts in the link's directory.
        at.pop();
        let steps: Vec<&str> = target
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        for (i, step) in steps.iter().enumerate() {
            if *step == ".." {
                if at.pop().is_none() {
                    return Err("symlink target escapes the code directory");
                }
                continue;
            }
            let parent = match at.last() {
                Some(p) => *p,
                None => Some(ROOT),
            };
            let node = parent.and_then(|p| self.child(p, step));
            let is_link = node
                .and_then(|id| self.node(id))
                .is_some_and(|n| n.kind == Kind::Symlink);
            if is_link && i + 1 < steps.len() {
                return Err("symlink target passes through another symlink");
            }
            at.push(node);
        }
        Ok(())
    }
}

struct Planned {
    index: usize,
    /// The name as the archive gives it, for errors.
    name: String,
    /// The checked components joined by `/`.
    path: String,
    kind: Kind,
    declared: u64,
}

struct Plan {
    tree: Tree,
    entries: Vec<Planned>,
}

/// First pass, over metadata only: checks every entry and builds the tree model, so that a bad archive
/// is refused before a byte is written.
fn plan_extraction(archive: &mut ZipArchive<Cursor<&[u8]>>) -> Result<Plan, CodeError> {
    let mut tree = Tree::new();
    let mut entries = Vec::with_capacity(archive.len());
    let mut declared_total = 0u64;
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| CodeError::InvalidZip(e.to_string()))?;
        let name = entry.name().to_owned();
        if entry.encrypted() {
            return Err(CodeError::unsafe_entry(&name, "encrypted entry"));
        }
        let (parts, dir_name) = split_name(&name).map_err(|r| CodeError::unsafe_entry(&name, r))?;
        let mode = entry.unix_mode().unwrap_or(0);
        let kind = match mode & S_IFMT {
            S_IFLNK if dir_name => {
                return Err(CodeError::unsafe_entry(
                    &name,
                    "symlink with a directory name",
                ))
            }
            S_IFLNK => Kind::Symlink,
            S_IFDIR => Kind::Dir,
            // Some tools leave the type bits out; the name then says what it is.
            0 | S_IFREG if dir_name => Kind::Dir,
            0 | S_IFREG => Kind::File {
                executable: mode & 0o111 != 0,
            },
            _ => {
                return Err(CodeError::unsafe_entry(
                    &name,
                    "special file (device, fifo or socket)",
                ))
            }
        };
        if parts.is_empty() {
            // `./` and the like: the root itself, which exists already.
            if kind == Kind::Dir {
                continue;
            }
            return Err(CodeError::unsafe_entry(&name, "empty name"));
        }
        if kind != Kind::Dir {
            if !matches!(
                entry.compression(),
                CompressionMethod::Stored | CompressionMethod::Deflated
            ) {
                return Err(CodeError::InvalidZip(format!(
                    "{name}: unsupported compression method {}",
                    entry.compression()
                )));
            }
            if kind == Kind::Symlink && entry.size() > MAX_LINK_TARGET_BYTES {
                return Err(CodeError::unsafe_entry(&name, "symlink target too long"));
            }
            // Each entry is later held to its declared size, so the declared sum bounds what will be
            // written: a bomb that declares its size is refused here without touching the disk.
            declared_total = declared_total.saturating_add(entry.size());
            if declared_total > Limits::UNZIPPED_BYTES {
                return Err(CodeError::UnzippedTooLarge);
            }
        }
        tree.insert(&parts, kind)
            .map_err(|r| CodeError::unsafe_entry(&name, r))?;
        entries.push(Planned {
            index,
            path: parts.join("/"),
            kind,
            declared: entry.size(),
            name,
        });
    }
    Ok(Plan { tree, entries })
}

/// Second pass: writes the planned entries under `dest`, counting real decompressed bytes.
///
/// Nothing here can follow a symlink: `dest` is a fresh private directory, the plan guarantees no entry
/// lies under a symlink entry, directories are created one component at a time, and files and links are
/// created with O_EXCL semantics (`create_new`, `symlink`), which fail rather than follow.
fn write_tree(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    plan: Plan,
    dest: &Path,
) -> Result<(), CodeError> {
    let Plan { mut tree, entries } = plan;
    let mut buf = vec![0u8; COPY_BUF_BYTES];
    let mut total = 0u64;
    for planned in &entries {
        let parts: Vec<&str> = planned.path.split('/').collect();
        let chain = tree.chain(&parts);
        // Directories along the way (and the entry itself, if a directory); the plan put them all in.
        let dirs = if planned.kind == Kind::Dir {
            chain.len()
        } else {
            chain.len().saturating_sub(1)
        };
        create_dirs(
            &mut tree,
            chain.get(..dirs).unwrap_or_default(),
            &parts,
            dest,
        )?;
        let path = dest.join(&planned.path);
        match planned.kind {
            Kind::Dir => {}
            Kind::File { executable } => {
                let mut entry = archive
                    .by_index(planned.index)
                    .map_err(|e| CodeError::InvalidZip(e.to_string()))?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                copy_counted(&mut entry, &mut file, planned, &mut total, &mut buf)?;
                // Set on the open handle, so the umask cannot narrow it and no path is re-resolved.
                // Only 0755 or 0644: setuid, setgid, sticky and group/world write never survive.
                let perm = if executable { 0o755 } else { 0o644 };
                file.set_permissions(Permissions::from_mode(perm))?;
            }
            Kind::Symlink => {
                let mut entry = archive
                    .by_index(planned.index)
                    .map_err(|e| CodeError::InvalidZip(e.to_string()))?;
                let mut target = Vec::new();
                copy_counted(&mut entry, &mut target, planned, &mut total, &mut buf)?;
                tree.check_link_target(&parts, &target)
                    .map_err(|r| CodeError::unsafe_entry(&planned.name, r))?;
                let target = std::str::from_utf8(&target).map_err(|_| {
                    CodeError::unsafe_entry(&planned.name, "symlink target is not UTF-8")
                })?;
                std::os::unix::fs::symlink(target, &path)?;
            }
        }
    }
    Ok(())
}

/// Creates, under `base`, the directories `chain` (node ids) named by `parts`, skipping those made already.
fn create_dirs(
    tree: &mut Tree,
    chain: &[usize],
    parts: &[&str],
    base: &Path,
) -> Result<(), CodeError> {
    let mut path = base.to_path_buf();
    for (&id, part) in chain.iter().zip(parts) {
        path.push(part);
        let Some(node) = tree.nodes.get_mut(id) else {
            continue;
        };
        if node.created {
            continue;
        }
        // create_dir fails on anything already there, a symlink included, rather than follow it.
        fs::create_dir(&path)?;
        // The umask might have narrowed the mode; the sandbox's unprivileged user needs 0755.
        fs::set_permissions(&path, Permissions::from_mode(0o755))?;
        node.created = true;
    }
    Ok(())
}

/// Copies one entry, counting what decompression really produces: the running total must stay within
/// the unzipped limit and the entry within its declared size, whatever the headers claim.
fn copy_counted(
    src: &mut impl Read,
    sink: &mut impl Write,
    planned: &Planned,
    total: &mut u64,
    buf: &mut [u8],
) -> Result<(), CodeError> {
    let mut written = 0u64;
    loop {
        let n = match src.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A corrupt stream or a CRC mismatch: the archive's fault, not the disk's.
            Err(e) => return Err(CodeError::InvalidZip(format!("{}: {e}", planned.name))),
        };
        let chunk = buf
            .get(..n)
            .ok_or_else(|| CodeError::InvalidZip(format!("{}: bad read", planned.name)))?;
        written = written.saturating_add(n as u64);
        *total = total.saturating_add(n as u64);
        // The declared sizes were summed against the limit already, so with the per-entry check this
        // cannot trip on its own; it stays so that the limit never rests on header arithmetic alone.
        if *total > Limits::UNZIPPED_BYTES {
            return Err(CodeError::UnzippedTooLarge);
        }
        if written > planned.declared {
            return Err(CodeError::unsafe_entry(
                &planned.name,
                "entry is larger than its declared size",
            ));
        }
        sink.write_all(chunk)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use zip::write::SimpleFileOptions;

    fn store() -> (tempfile::TempDir, CodeStore) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = CodeStore::open(tmp.path().join("code")).expect("open");
        (tmp, store)
    }

    /// Builds a zip with the zip crate's writer.
    fn build(
        f: impl FnOnce(&mut zip::ZipWriter<Cursor<Vec<u8>>>) -> zip::result::ZipResult<()>,
    ) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        f(&mut w).expect("write entries");
        w.finish().expect("finish").into_inner()
    }

    fn opts(mode: u32) -> SimpleFileOptions {
        SimpleFileOptions::default().unix_permissions(mode)
    }

    /// One entry of a hand-made zip, for archives the zip crate's writer refuses to produce.
    struct Raw<'a> {
        name: &'a [u8],
        data: &'a [u8],
        method: u16,
        crc: u32,
        /// Declared uncompressed size.
        size: u32,
        /// Unix mode for the external attributes; 0 leaves them empty.
        mode: u32,
        flags: u16,
    }

    fn stored<'a>(name: &'a [u8], data: &'a [u8]) -> Raw<'a> {
        Raw {
            name,
            data,
            method: 0,
            crc: crc32(data),
            size: data.len() as u32,
            mode: 0o100_644,
            flags: 0,
        }
    }

    fn raw_zip(entries: &[Raw<'_>]) -> Vec<u8> {
        fn u16le(v: &mut Vec<u8>, x: u16) {
            v.extend_from_slice(&x.to_le_bytes());
        }
        fn u32le(v: &mut Vec<u8>, x: u32) {
            v.extend_from_slice(&x.to_le_bytes());
        }
        let mut out = Vec::new();
        let mut central = Vec::new();
        for e in entries {
            let offset = out.len() as u32;
            u32le(&mut out, 0x0403_4b50);
            u16le(&mut out, 20);
            u16le(&mut out, e.flags);
            u16le(&mut out, e.method);
            u32le(&mut out, 0); // time, date
            u32le(&mut out, e.crc);
            u32le(&mut out, e.data.len() as u32);
            u32le(&mut out, e.size);
            u16le(&mut out, e.name.len() as u16);
            u16le(&mut out, 0);
            out.extend_from_slice(e.name);
            out.extend_from_slice(e.data);

            u32le(&mut central, 0x0201_4b50);
            u16le(&mut central, (3 << 8) | 20); // made by Unix, so the mode is read from the attributes
            u16le(&mut central, 20);
            u16le(&mut central, e.flags);
            u16le(&mut central, e.method);
            u32le(&mut central, 0);
            u32le(&mut central, e.crc);
            u32le(&mut central, e.data.len() as u32);
            u32le(&mut central, e.size);
            u16le(&mut central, e.name.len() as u16);
            u16le(&mut central, 0); // extra
            u16le(&mut central, 0); // comment
            u16le(&mut central, 0); // disk
            u16le(&mut central, 0); // internal attributes
            u32le(&mut central, e.mode << 16);
            u32le(&mut central, offset);
            central.extend_from_slice(e.name);
        }
        let cd_offset = out.len() as u32;
        out.extend_from_slice(&central);
        u32le(&mut out, 0x0605_4b50);
        u32le(&mut out, 0); // disk numbers
        u16le(&mut out, entries.len() as u16);
        u16le(&mut out, entries.len() as u16);
        u32le(&mut out, central.len() as u32);
        u32le(&mut out, cd_offset);
        u16le(&mut out, 0);
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A deflate stream of `1 + 258 * matches` zeros, written by hand: one dynamic-Huffman block in
    /// which a 258-byte match costs two bits, so 300 MB fits in about 300 KB. (Compressing that much
    /// with the zip crate takes seconds in a debug build.)
    fn zeros_deflate(matches: usize) -> Vec<u8> {
        struct Bits {
            out: Vec<u8>,
            acc: u8,
            n: u32,
        }
        impl Bits {
            /// A value, least significant bit first (header fields, extra bits).
            fn put(&mut self, value: u32, count: u32) {
                for i in 0..count {
                    self.acc |= (((value >> i) & 1) as u8) << self.n;
                    self.n += 1;
                    if self.n == 8 {
                        self.out.push(self.acc);
                        self.acc = 0;
                        self.n = 0;
                    }
                }
            }
            /// A Huffman code, most significant bit first.
            fn code(&mut self, code: u32, len: u32) {
                for i in (0..len).rev() {
                    self.put((code >> i) & 1, 1);
                }
            }
        }
        let mut b = Bits {
            out: Vec::with_capacity(matches / 4 + 64),
            acc: 0,
            n: 0,
        };
        b.put(1, 1); // last block
        b.put(2, 2); // dynamic Huffman
        b.put(286 - 257, 5); // literal/length codes 0..=285
        b.put(0, 5); // one distance code
        b.put(18 - 4, 4); // code-length code lengths given, in the RFC's order, up to symbol 1
                          // Code-length alphabet: 18 (run of zeros) -> "0", 1 -> "10", 2 -> "11".
        for sym in [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1] {
            b.put(
                match sym {
                    18 => 1,
                    1 | 2 => 2,
                    _ => 0,
                },
                3,
            );
        }
        // Literal/length lengths: 0 -> 2, 256 (end) -> 2, 285 (length 258) -> 1; distance 0 -> 1.
        b.code(0b11, 2); // literal 0: length 2
        b.code(0, 1);
        b.put(138 - 11, 7); // 138 zeros
        b.code(0, 1);
        b.put(117 - 11, 7); // 117 zeros (literals 1..=255)
        b.code(0b11, 2); // 256: length 2
        b.code(0, 1);
        b.put(28 - 11, 7); // 28 zeros (257..=284)
        b.code(0b10, 2); // 285: length 1
        b.code(0b10, 2); // distance 0: length 1
                         // Data. Canonical codes: 285 -> "0", literal 0 -> "10", end -> "11"; distance 0 -> "0".
        b.code(0b10, 2);
        for _ in 0..matches {
            b.code(0, 1); // length 258
            b.code(0, 1); // distance 1
        }
        b.code(0b11, 2);
        if b.n > 0 {
            b.out.push(b.acc);
        }
        b.out
    }

    fn unsafe_reason(result: Result<StoredCode, CodeError>) -> &'static str {
        match result {
            Err(CodeError::UnsafeEntry { reason, .. }) => reason,
            other => panic!("expected UnsafeEntry, got {other:?}"),
        }
    }

    /// What the root holds besides complete packages; must be empty after any put, failed or not.
    fn leftovers(store: &CodeStore) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&store.root)
            .expect("read root")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| {
                let id = n.strip_suffix(".zip").unwrap_or(n);
                !(is_code_id(id) && store.get(id).is_some())
            })
            .collect();
        names.sort();
        names
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("metadata").mode() & 0o7777
    }

    #[test]
    fn normal_package_is_extracted_with_sane_permissions() {
        let (_tmp, store) = store();
        let zip = build(|w| {
            w.add_directory("lib/", opts(0o700))?;
            w.start_file("bootstrap", opts(0o755))?;
            w.write_all(b"#!/bin/sh\necho hi\n")?;
            w.start_file("lib/deep/nested/data.json", opts(0o600))?;
            w.write_all(b"{}")?;
            w.start_file("lib/setuid", opts(0o4777))?;
            w.write_all(b"x")?;
            w.start_file("lib/world-writable", opts(0o666))?;
            w.write_all(b"y")?;
            Ok(())
        });
        let stored = store.put_zip(&zip).expect("put");

        let digest = Sha256::digest(&zip);
        assert_eq!(stored.code_id, hex::encode(digest));
        assert_eq!(
            stored.sha256_base64,
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        assert_eq!(stored.zip_size, zip.len() as u64);
        assert_eq!(store.get(&stored.code_id), Some(stored.clone()));
        let zip_path = store.zip_path(&stored.code_id).expect("zip path");
        assert_eq!(fs::read(zip_path).expect("read zip"), zip);

        let dir = &stored.dir;
        assert_eq!(
            fs::read(dir.join("bootstrap")).expect("bootstrap"),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(
            fs::read(dir.join("lib/deep/nested/data.json")).expect("nested"),
            b"{}"
        );
        assert_eq!(mode_of(&dir.join("bootstrap")), 0o755);
        assert_eq!(mode_of(&dir.join("lib/deep/nested/data.json")), 0o644);
        assert_eq!(mode_of(&dir.join("lib/setuid")), 0o755);
        assert_eq!(mode_of(&dir.join("lib/world-writable")), 0o644);
        for d in ["", "lib", "lib/deep", "lib/deep/nested"] {
            assert_eq!(mode_of(&dir.join(d)), 0o755, "{d}");
        }
        assert!(leftovers(&store).is_empty());
    }

    #[test]
    fn same_bytes_same_id_and_reuse() {
        let (_tmp, store) = store();
        let zip = build(|w| {
            w.start_file("index.js", opts(0o644))?;
            w.write_all(b"exports.handler = async () => 1;")?;
            Ok(())
        });
        let first = store.put_zip(&zip).expect("first put");
        let marker = first.dir.join("marker");
        fs::write(&marker, b"still here").expect("marker");
        let second = store.put_zip(&zip).expect("second put");
        assert_eq!(first, second);
        assert!(
            marker.exists(),
            "the second put must reuse the tree, not rebuild it"
        );

        let other = build(|w| {
            w.start_file("index.js", opts(0o644))?;
            w.write_all(b"exports.handler = async () => 2;")?;
            Ok(())
        });
        assert_ne!(store.put_zip(&other).expect("other").code_id, first.code_id);

        // A crash between the two renames leaves the tree without its zip; the next put completes it.
        fs::remove_file(store.root.join(format!("{}.zip", first.code_id))).expect("rm zip");
        assert_eq!(store.get(&first.code_id), None);
        assert_eq!(store.put_zip(&zip).expect("third put"), first);
        assert!(marker.exists());
        assert!(leftovers(&store).is_empty());
    }

    #[test]
    fn hostile_names_are_rejected() {
        let (tmp, store) = store();
        let long_component = "a".repeat(256);
        let long_name = format!("{}/x", "d/".repeat(2048));
        let cases: [(&[u8], &str); 10] = [
            (b"../evil", "parent directory (`..`) component"),
            (b"/abs", "absolute path"),
            (b"a/../../b", "parent directory (`..`) component"),
            (b"a\\b", "backslash in name"),
            (b"a\0b", "NUL byte in name"),
            (b"C:/windows", "drive prefix"),
            (b"a//b", "empty path component"),
            (b"", "empty name"),
            (
                long_component.as_bytes(),
                "path component longer than 255 bytes",
            ),
            (long_name.as_bytes(), "name longer than 4096 bytes"),
        ];
        for (name, reason) in cases {
            let zip = raw_zip(&[stored(b"ok.txt", b"fine"), stored(name, b"evil")]);
            let got = unsafe_reason(store.put_zip(&zip));
            assert_eq!(got, reason, "{}", String::from_utf8_lossy(name));
        }
        assert!(leftovers(&store).is_empty());
        assert!(!tmp.path().join("evil").exists());
        assert!(!Path::new("/abs").exists());
    }

    #[test]
    fn symlinks_must_stay_inside() {
        let (_tmp, store) = store();
        let with_link = |link: &'static str, target: &'static str| {
            build(move |w| {
                w.add_directory("a/", opts(0o755))?;
                w.add_directory("sub/lib/", opts(0o755))?;
                w.add_symlink(link, target, opts(0o777))
            })
        };
        assert_eq!(
            unsafe_reason(store.put_zip(&with_link("a/link", "/etc/passwd"))),
            "absolute symlink target"
        );
        assert_eq!(
            unsafe_reason(store.put_zip(&with_link("a/link", "../../x"))),
            "symlink target escapes the code directory"
        );
        assert_eq!(
            unsafe_reason(store.put_zip(&with_link("link", "sub/../.."))),
            "symlink target escapes the code directory"
        );

        let ok = store
            .put_zip(&with_link("lib", "sub/lib"))
            .expect("inside link");
        assert_eq!(
            fs::read_link(ok.dir.join("lib")).expect("read_link"),
            Path::new("sub/lib")
        );
        let ok = store
            .put_zip(&with_link("a/up", "../sub/./lib/"))
            .expect("inside link");
        assert_eq!(
            fs::read_link(ok.dir.join("a/up")).expect("read_link"),
            Path::new("../sub/./lib/")
        );

        // Each link stays inside on its own, but the kernel resolves `s/..` from where `s` points.
        let chained = build(|w| {
            w.add_symlink("a/b/s", "../..", opts(0o777))?;
            w.add_symlink("a/b/t", "s/../../..", opts(0o777))
        });
        assert_eq!(
            unsafe_reason(store.put_zip(&chained)),
            "symlink target passes through another symlink"
        );
        assert!(leftovers(&store).is_empty());
    }

    #[test]
    fn nothing_is_written_through_a_symlink() {
        let (_tmp, store) = store();
        let link_first = build(|w| {
            w.add_symlink("lib", "sub", opts(0o777))?;
            w.add_directory("sub/", opts(0o755))?;
            w.start_file("lib/x", opts(0o644))?;
            w.write_all(b"x")?;
            Ok(())
        });
        assert_eq!(
            unsafe_reason(store.put_zip(&link_first)),
            "parent path is a symlink"
        );

        let link_last = build(|w| {
            w.start_file("lib/x", opts(0o644))?;
            w.write_all(b"x")?;
            w.add_symlink("lib", "/tmp", opts(0o777))
        });
        assert_eq!(
            unsafe_reason(store.put_zip(&link_last)),
            "path is a directory of other entries"
        );

        let file_as_dir = build(|w| {
            w.start_file("f", opts(0o644))?;
            w.start_file("f/x", opts(0o644))
        });
        assert_eq!(
            unsafe_reason(store.put_zip(&file_as_dir)),
            "parent path is a file"
        );
        assert!(leftovers(&store).is_empty());
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let (_tmp, store) = store();
        let same = raw_zip(&[stored(b"a.txt", b"first"), stored(b"a.txt", b"second")]);
        match store.put_zip(&same) {
            Err(CodeError::UnsafeEntry { name, reason }) => {
                assert_eq!((name.as_str(), reason), ("a.txt", "duplicate entry name"));
            }
            other => panic!("expected a duplicate, got {other:?}"),
        }
        let dir_and_file = raw_zip(&[
            Raw {
                mode: 0o040_755,
                ..stored(b"a/", b"")
            },
            stored(b"a", b"file"),
        ]);
        assert_eq!(
            unsafe_reason(store.put_zip(&dir_and_file)),
            "duplicate entry name"
        );
        let dot_alias = raw_zip(&[stored(b"x/y", b"1"), stored(b"x/./y", b"2")]);
        assert_eq!(
            unsafe_reason(store.put_zip(&dot_alias)),
            "duplicate entry name"
        );
        assert!(leftovers(&store).is_empty());
    }

    #[test]
    fn special_and_encrypted_entries_are_rejected() {
        let (_tmp, store) = store();
        let fifo = raw_zip(&[Raw {
            mode: 0o010_644,
            ..stored(b"pipe", b"")
        }]);
        assert_eq!(
            unsafe_reason(store.put_zip(&fifo)),
            "special file (device, fifo or socket)"
        );
        let device = raw_zip(&[Raw {
            mode: 0o060_600,
            ..stored(b"disk", b"")
        }]);
        assert_eq!(
            unsafe_reason(store.put_zip(&device)),
            "special file (device, fifo or socket)"
        );
        let encrypted = raw_zip(&[Raw {
            flags: 1,
            ..stored(b"secret", b"0123456789ab-ciphertext")
        }]);
        assert_eq!(unsafe_reason(store.put_zip(&encrypted)), "encrypted entry");
        assert!(leftovers(&store).is_empty());
    }

    #[test]
    fn handmade_deflate_stream_decodes() {
        // Checks the bomb builder itself, so the bomb tests below fail for the right reason.
        let (_tmp, store) = store();
        let zeros = vec![0u8; 1 + 258 * 1000];
        let stream = zeros_deflate(1000);
        let size = zeros.len() as u32;
        let zip = raw_zip(&[Raw {
            method: 8,
            crc: crc32(&zeros),
            size,
            ..stored(b"zeros", &stream)
        }]);
        let stored = store.put_zip(&zip).expect("put");
        assert_eq!(fs::read(stored.dir.join("zeros")).expect("read"), zeros);
    }

    #[test]
    fn zip_bomb_is_stopped() {
        let (_tmp, store) = store();
        let matches = 1_219_275; // 1 + 258 * matches = 314,572,951 bytes, a bit over 300 MiB
        let stream = zeros_deflate(matches);
        assert!(stream.len() < 400_000, "{} bytes", stream.len());
        let actual = 1 + 258 * matches as u64;

        // Honest header: refused from the declared size, before anything is written.
        let honest = raw_zip(&[Raw {
            method: 8,
            size: actual as u32,
            ..stored(b"bomb", &stream)
        }]);
        let started = std::time::Instant::now();
        assert!(matches!(
            store.put_zip(&honest),
            Err(CodeError::UnzippedTooLarge)
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));

        // Lying header: the real byte count catches it after about 1 MiB.
        let lying = raw_zip(&[Raw {
            method: 8,
            size: 1 << 20,
            ..stored(b"bomb", &stream)
        }]);
        let started = std::time::Instant::now();
        assert_eq!(
            unsafe_reason(store.put_zip(&lying)),
            "entry is larger than its declared size"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));

        // Many honest-looking entries sharing one bomb's data add up past the limit as well.
        let part = Raw {
            method: 8,
            size: actual as u32,
            ..stored(b"", &stream)
        };
        let names: Vec<String> = (0..2).map(|i| format!("part{i}")).collect();
        let parts: Vec<Raw<'_>> = names
            .iter()
            .map(|n| Raw {
                name: n.as_bytes(),
                ..part
            })
            .collect();
        assert!(matches!(
            store.put_zip(&raw_zip(&parts)),
            Err(CodeError::UnzippedTooLarge)
        ));
        assert!(leftovers(&store).is_empty());
    }

    #[test]
    fn too_many_entries() {
        let (_tmp, store) = store();
        let zip = build(|w| {
            for i in 0..=Limits::ZIP_ENTRIES {
                w.start_file(
                    format!("f{i}"),
                    SimpleFileOptions::default().compression_method(CompressionMethod::Stored),
                )?;
            }
            Ok(())
        });
        assert!(matches!(
            store.put_zip(&zip),
            Err(CodeError::TooManyEntries)
        ));
        assert!(leftovers(&store).is_empty());
    }

    #[test]
    fn understated_entry_count_is_caught_by_the_walk() {
        let (_tmp, store) = store();
        let mut zip = build(|w| {
            for i in 0..=Limits::ZIP_ENTRIES {
                w.start_file(
                    format!("f{i}"),
                    SimpleFileOptions::default().compression_method(CompressionMethod::Stored),
                )?;
            }
            Ok(())
        });
        // Make the end record claim the limit exactly: the zip crate then reads one entry too few.
        let eocd = zip.len() - EOCD_LEN;
        let claimed = (Limits::ZIP_ENTRIES as u16).to_le_bytes();
        zip[eocd + 8..eocd + 10].copy_from_slice(&claimed);
        zip[eocd + 10..eocd + 12].copy_from_slice(&claimed);
        assert_eq!(declared_entry_count(&zip), Some(Limits::ZIP_ENTRIES as u64));
        assert!(matches!(
            store.put_zip(&zip),
            Err(CodeError::TooManyEntries)
        ));

        let one_short = raw_zip(&[stored(b"a", b"1"), stored(b"b", b"2")]);
        let mut one_short = one_short;
        let eocd = one_short.len() - EOCD_LEN;
        one_short[eocd + 8..eocd + 12].copy_from_slice(&[1, 0, 1, 0]);
        assert_eq!(
            unsafe_reason(store.put_zip(&one_short)),
            "central directory entries collide or disagree with the entry count"
        );
        assert!(leftovers(&store).is_empty());
    }

    #[test]
    fn names_that_collide_after_decoding_are_rejected() {
        let (_tmp, store) = store();
        // Flagged UTF-8 but invalid: both names decode to U+FFFD, and the zip crate keeps only one.
        let zip = raw_zip(&[
            Raw {
                flags: 1 << 11,
                ..stored(b"\xff", b"1")
            },
            Raw {
                flags: 1 << 11,
                ..stored(b"\xfe", b"2")
            },
        ]);
        assert_eq!(
            unsafe_reason(store.put_zip(&zip)),
            "central directory entries collide or disagree with the entry count"
        );
    }

    #[test]
    fn dot_components_are_dropped() {
        let (_tmp, store) = store();
        let zip = raw_zip(&[
            Raw {
                mode: 0o040_755,
                ..stored(b"./", b"")
            },
            Raw {
                mode: 0o100_755,
                ..stored(b"./bootstrap", b"run")
            },
            stored(b"lib/./a.txt", b"a"),
        ]);
        let stored = store.put_zip(&zip).expect("put");
        assert_eq!(
            fs::read(stored.dir.join("bootstrap")).expect("bootstrap"),
            b"run"
        );
        assert_eq!(mode_of(&stored.dir.join("bootstrap")), 0o755);
        assert_eq!(fs::read(stored.dir.join("lib/a.txt")).expect("a"), b"a");
    }

    #[test]
    fn not_a_zip_or_too_big() {
        let (_tmp, store) = store();
        assert!(matches!(
            store.put_zip(b"this is not a zip file"),
            Err(CodeError::InvalidZip(_))
        ));
        assert!(matches!(store.put_zip(b""), Err(CodeError::InvalidZip(_))));
        // Corrupt data behind valid headers fails as the archive's fault, not as an I/O error.
        let bad_crc = raw_zip(&[Raw {
            crc: 1,
            ..stored(b"a", b"data")
        }]);
        assert!(matches!(
            store.put_zip(&bad_crc),
            Err(CodeError::InvalidZip(_))
        ));
        let huge = vec![0u8; Limits::ZIP_BYTES + 1];
        assert!(matches!(
            store.put_zip(&huge),
            Err(CodeError::TooLarge { .. })
        ));
        assert!(leftovers(&store).is_empty());
    }

    #[test]
    fn ids_are_validated_and_remove_works() {
        let (_tmp, store) = store();
        let zip = build(|w| {
            w.start_file("f", opts(0o644))?;
            w.write_all(b"f")?;
            Ok(())
        });
        let stored = store.put_zip(&zip).expect("put");
        for bad in [
            "..",
            "../code",
            &stored.code_id.to_uppercase(),
            &stored.code_id[1..],
            "",
        ] {
            assert_eq!(store.get(bad), None, "{bad}");
            assert_eq!(store.zip_path(bad), None, "{bad}");
            store.remove(bad).expect("no-op remove");
        }
        assert!(store.get(&stored.code_id).is_some());
        store.remove(&stored.code_id).expect("remove");
        assert_eq!(store.get(&stored.code_id), None);
        assert_eq!(store.zip_path(&stored.code_id), None);
        store.remove(&stored.code_id).expect("second remove");
        assert!(leftovers(&store).is_empty());
        assert_eq!(fs::read_dir(&store.root).expect("root").count(), 0);
    }

    #[test]
    fn sweep_partial_removes_leftovers_only() {
        let (_tmp, store) = store();
        let zip = build(|w| {
            w.start_file("f", opts(0o644))?;
            w.write_all(b"f")?;
            Ok(())
        });
        let stored = store.put_zip(&zip).expect("put");
        let half = store
            .root
            .join(format!("{PARTIAL_PREFIX}{}-1-0", stored.code_id));
        fs::create_dir_all(half.join("lib")).expect("fake tree");
        fs::write(half.join("lib/x"), b"x").expect("fake file");
        fs::write(
            store
                .root
                .join(format!("{PARTIAL_PREFIX}{}-1-1.zip", stored.code_id)),
            b"PK",
        )
        .expect("fake zip");
        assert_eq!(store.sweep_partial().expect("sweep"), 2);
        assert!(!half.exists());
        assert_eq!(store.get(&stored.code_id), Some(stored));
        assert_eq!(store.sweep_partial().expect("second sweep"), 0);
    }
}
