//! The [`ReadOnlyFs`] tree as a `dav_server` file system: paths walked component by
//! component through `lookup`, listings through `readdir`, reads through `open`.
//!
//! Symbolic links. WebDAV has no links, so each one is either served as what it points to or
//! refused. A link is followed only when its target, read relative to the link's folder, stays
//! inside the view the link belongs to (the [`LinkScope`]: `mirror/`, one snapshot, one
//! increment) and ends at a regular file. Absolute targets, targets that climb out of the
//! view, links to folders (a link to a parent would make every recursive client loop) and
//! chains longer than [`MAX_HOPS`] are listed (as empty files) but refused with 403: nothing
//! is ever read through a link from outside the backup.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::SeekFrom;
use std::sync::Arc;
use std::time::SystemTime;

use backup_platform::rofs::{FsError, NodeAttr, NodeKind, ReadOnlyFs, ROOT_INO};
use bytes::Bytes;
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, FsError as DavError, FsFuture, FsStream,
    OpenOptions, ReadDirMeta,
};
use futures_util::FutureExt;

/// Longest chain of links followed before giving up.
pub const MAX_HOPS: usize = 8;

/// How many leading path components form the view a link at `path` (its components, the link
/// itself last) may point within; `None` when links there are never followed.
pub type LinkScope = Arc<dyn Fn(&[Vec<u8>]) -> Option<usize> + Send + Sync>;

/// What a request path is, as served.
#[derive(Clone, Debug)]
pub enum Served {
    Dir(NodeAttr),
    File(NodeAttr),
    /// A link that is listed but not followed; `target` is what it says.
    RefusedLink {
        link: NodeAttr,
        target: OsString,
    },
}

impl Served {
    pub fn meta(&self) -> Meta {
        match self {
            Served::Dir(a) => Meta {
                dir: true,
                size: 0,
                mtime: a.mtime,
                perm: a.perm,
            },
            Served::File(a) => Meta {
                dir: false,
                size: a.size,
                mtime: a.mtime,
                perm: a.perm,
            },
            Served::RefusedLink { link, .. } => Meta {
                dir: false,
                size: 0,
                mtime: link.mtime,
                perm: link.perm,
            },
        }
    }
}

/// One entry of a served listing.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: Vec<u8>,
    pub served: Served,
}

#[derive(Clone, Debug)]
pub struct Meta {
    pub dir: bool,
    pub size: u64,
    pub mtime: SystemTime,
    perm: u16,
}

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.size
    }
    fn modified(&self) -> Result<SystemTime, DavError> {
        Ok(self.mtime)
    }
    fn is_dir(&self) -> bool {
        self.dir
    }
    fn executable(&self) -> Result<bool, DavError> {
        Ok(!self.dir && self.perm & 0o111 != 0)
    }
}

/// Why a path cannot be served, in the tree's terms.
fn dav_err(e: &FsError) -> DavError {
    match e {
        FsError::NotFound | FsError::NotDir => DavError::NotFound,
        FsError::IsDir | FsError::ReadOnly => DavError::Forbidden,
        FsError::NotSymlink | FsError::NoData | FsError::Io(_) => DavError::GeneralFailure,
    }
}

/// The `/`-separated components of a decoded request path (`DavPath::as_bytes`). `.`/`..`
/// never reach here (the front refuses them), but a component that is one is refused again.
pub fn segments(path: &[u8]) -> Result<Vec<Vec<u8>>, FsError> {
    let mut out = Vec::new();
    for s in path.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        if s == b"." || s == b".." || s.contains(&0) || (cfg!(windows) && bad_on_windows(s)) {
            return Err(FsError::NotFound);
        }
        out.push(s.to_vec());
    }
    Ok(out)
}

/// A backslash is a separator and `:` opens an alternate stream on Windows.
fn bad_on_windows(s: &[u8]) -> bool {
    s.iter().any(|&b| b == b'\\' || b == b':')
}

fn os_name(bytes: &[u8]) -> Result<OsString, FsError> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(OsStr::from_bytes(bytes).to_os_string())
    }
    #[cfg(not(unix))]
    {
        std::str::from_utf8(bytes)
            .map(OsString::from)
            .map_err(|_| FsError::NotFound)
    }
}

fn name_bytes(name: &OsStr) -> Vec<u8> {
    name.as_encoded_bytes().to_vec()
}

/// The tree behind the server, with the link policy.
pub struct Tree<F: ReadOnlyFs> {
    fs: Arc<F>,
    scope: LinkScope,
}

impl<F: ReadOnlyFs> Tree<F> {
    pub fn new(fs: Arc<F>, scope: LinkScope) -> Self {
        Tree { fs, scope }
    }

    /// The tree's current state: each request takes it once and passes it to every call
    /// below, so a reload while it walks, follows links or lists cannot mix two states.
    pub fn state(&self) -> F::State {
        self.fs.state()
    }

    /// The node at `segs` without following a final link; every component before the last
    /// must be a real folder (a link in the middle is never walked through).
    fn walk(&self, st: &F::State, segs: &[Vec<u8>]) -> Result<NodeAttr, FsError> {
        let mut attr = self.fs.getattr(st, ROOT_INO)?;
        for s in segs {
            if attr.kind != NodeKind::Dir {
                return Err(FsError::NotFound);
            }
            attr = self.fs.lookup(st, attr.ino, &os_name(s)?)?;
        }
        Ok(attr)
    }

    /// What `segs` is, as served (links resolved by the policy above).
    pub fn resolve(&self, st: &F::State, segs: &[Vec<u8>]) -> Result<Served, FsError> {
        let attr = self.walk(st, segs)?;
        Ok(self.serve_node(st, segs, attr))
    }

    fn serve_node(&self, st: &F::State, segs: &[Vec<u8>], attr: NodeAttr) -> Served {
        match attr.kind {
            NodeKind::Dir => Served::Dir(attr),
            NodeKind::File => Served::File(attr),
            NodeKind::Symlink => self.follow(st, segs, attr),
        }
    }

    fn follow(&self, st: &F::State, segs: &[Vec<u8>], link: NodeAttr) -> Served {
        let first_target = self.fs.readlink(st, link.ino).unwrap_or_default();
        let refused = || Served::RefusedLink {
            link: link.clone(),
            target: first_target.clone(),
        };
        let Some(depth) = (self.scope)(segs) else {
            return refused();
        };
        let mut path = segs.to_vec();
        let mut attr = link.clone();
        for _ in 0..MAX_HOPS {
            let Ok(target) = self.fs.readlink(st, attr.ino) else {
                return refused();
            };
            let Some(next) = resolve_target(&path, &target, depth) else {
                return refused();
            };
            let Ok(a) = self.walk(st, &next) else {
                return refused();
            };
            match a.kind {
                NodeKind::File => return Served::File(a),
                NodeKind::Dir => return refused(),
                NodeKind::Symlink => {
                    path = next;
                    attr = a;
                }
            }
        }
        refused()
    }

    /// The listing of the folder at `segs`, each entry as served.
    pub fn list(&self, st: &F::State, segs: &[Vec<u8>]) -> Result<(NodeAttr, Vec<Entry>), FsError> {
        let dir = match self.resolve(st, segs)? {
            Served::Dir(a) => a,
            _ => return Err(FsError::NotDir),
        };
        let mut out = Vec::new();
        let mut child = segs.to_vec();
        // Entries with their attributes in one pass (a getattr per entry did the work twice).
        for (e, attr) in self.fs.readdir_plus(st, dir.ino)? {
            let name = name_bytes(&e.name);
            // A name this platform cannot put in a path is left out rather than mangled.
            if os_name(&name).is_err() {
                continue;
            }
            child.push(name.clone());
            let served = self.serve_node(st, &child, attr);
            child.pop();
            out.push(Entry { name, served });
        }
        Ok((dir, out))
    }

    pub fn open(&self, segs: &[Vec<u8>]) -> Result<(File, NodeAttr), DavError> {
        let st = self.state();
        match self.resolve(&st, segs).map_err(|e| dav_err(&e))? {
            Served::File(a) => Ok((self.fs.open(&st, a.ino).map_err(|e| dav_err(&e))?, a)),
            Served::Dir(_) => Err(DavError::Forbidden),
            Served::RefusedLink { .. } => Err(DavError::Forbidden),
        }
    }
}

/// The components a link at `link_path` with `target` points to, or `None` when the target is
/// absolute or leaves the first `depth` components (the view).
pub fn resolve_target(link_path: &[Vec<u8>], target: &OsStr, depth: usize) -> Option<Vec<Vec<u8>>> {
    let t = target.as_encoded_bytes();
    if t.is_empty() || t[0] == b'/' || (cfg!(windows) && (t[0] == b'\\' || t.get(1) == Some(&b':')))
    {
        return None;
    }
    let mut out: Vec<Vec<u8>> = link_path[..link_path.len().checked_sub(1)?].to_vec();
    let sep = |b: &u8| *b == b'/' || (cfg!(windows) && *b == b'\\');
    for c in t.split(sep) {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.len() <= depth {
                    return None;
                }
                out.pop();
            }
            name => {
                if name.contains(&0) {
                    return None;
                }
                out.push(name.to_vec());
            }
        }
    }
    // The view's own folder (or above) is never a link's file target.
    (out.len() > depth).then_some(out)
}

/// `dav_server`'s view of the tree. Every call into the tree runs on the blocking pool: the
/// tree reads the disk and may parse metadata.
pub struct DavTree<F: ReadOnlyFs> {
    tree: Arc<Tree<F>>,
}

impl<F: ReadOnlyFs> Clone for DavTree<F> {
    fn clone(&self) -> Self {
        DavTree {
            tree: Arc::clone(&self.tree),
        }
    }
}

impl<F: ReadOnlyFs> DavTree<F> {
    pub fn new(tree: Arc<Tree<F>>) -> Self {
        DavTree { tree }
    }
}

/// Runs `f` on the blocking pool; a panic or a cancelled task is a general failure.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DavError> + Send + 'static,
) -> Result<T, DavError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(DavError::GeneralFailure))
}

fn path_segs(path: &DavPath) -> Result<Vec<Vec<u8>>, DavError> {
    segments(path.as_bytes()).map_err(|e| dav_err(&e))
}

struct DirEntryOut {
    name: Vec<u8>,
    meta: Meta,
}

impl DavDirEntry for DirEntryOut {
    fn name(&self) -> Vec<u8> {
        self.name.clone()
    }
    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(self.meta.clone());
        std::future::ready(Ok(m)).boxed()
    }
}

/// An open backing file; each request opens its own, so its cursor is this reader's alone.
#[derive(Debug)]
struct ReadFile {
    file: Arc<File>,
    pos: u64,
    meta: Meta,
}

/// Up to `count` bytes of `file` from `pos` (fewer only at the end of the file). Read into
/// spare capacity, so a 1 MiB step never zero-fills its buffer first.
fn read_chunk(file: &File, pos: u64, count: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let mut f = file;
    f.seek(SeekFrom::Start(pos))?;
    let mut buf = Vec::with_capacity(count);
    f.take(count as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

impl DavFile for ReadFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(self.meta.clone());
        std::future::ready(Ok(m)).boxed()
    }
    fn write_buf(&mut self, _buf: Box<dyn bytes::Buf + Send>) -> FsFuture<'_, ()> {
        std::future::ready(Err(DavError::Forbidden)).boxed()
    }
    fn write_bytes(&mut self, _buf: Bytes) -> FsFuture<'_, ()> {
        std::future::ready(Err(DavError::Forbidden)).boxed()
    }
    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        let file = Arc::clone(&self.file);
        let pos = self.pos;
        async move {
            let buf = blocking(move || {
                read_chunk(&file, pos, count).map_err(|e| {
                    tracing::warn!("read error at offset {pos}: {e}");
                    DavError::GeneralFailure
                })
            })
            .await?;
            self.pos += buf.len() as u64;
            Ok(Bytes::from(buf))
        }
        .boxed()
    }
    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.meta.size.checked_add_signed(d),
        };
        let r = match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(DavError::GeneralFailure),
        };
        std::future::ready(r).boxed()
    }
    fn flush(&mut self) -> FsFuture<'_, ()> {
        std::future::ready(Ok(())).boxed()
    }
}

impl<F: ReadOnlyFs> DavFileSystem for DavTree<F> {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            if options.write || options.append || options.truncate || options.create {
                return Err(DavError::Forbidden);
            }
            let segs = path_segs(path)?;
            let tree = Arc::clone(&self.tree);
            let (file, attr) = blocking(move || tree.open(&segs)).await?;
            let f: Box<dyn DavFile> = Box::new(ReadFile {
                file: Arc::new(file),
                pos: 0,
                meta: Served::File(attr).meta(),
            });
            Ok(f)
        }
        .boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let segs = path_segs(path)?;
            let tree = Arc::clone(&self.tree);
            let (_, entries) =
                blocking(move || tree.list(&tree.state(), &segs).map_err(|e| dav_err(&e))).await?;
            let items: Vec<Result<Box<dyn DavDirEntry>, DavError>> = entries
                .into_iter()
                .map(|e| {
                    let b: Box<dyn DavDirEntry> = Box::new(DirEntryOut {
                        meta: e.served.meta(),
                        name: e.name,
                    });
                    Ok(b)
                })
                .collect();
            let s: FsStream<Box<dyn DavDirEntry>> = Box::pin(futures_util::stream::iter(items));
            Ok(s)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let segs = path_segs(path)?;
            let tree = Arc::clone(&self.tree);
            let served =
                blocking(move || tree.resolve(&tree.state(), &segs).map_err(|e| dav_err(&e)))
                    .await?;
            let m: Box<dyn DavMetaData> = Box::new(served.meta());
            Ok(m)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn link_targets_stay_inside_their_view() {
        let link = p(&["mirror", "docs", "link"]);
        let t = |s: &str| resolve_target(&link, OsStr::new(s), 1);
        assert_eq!(t("big.bin"), Some(p(&["mirror", "docs", "big.bin"])));
        assert_eq!(
            t("./sub/../big.bin"),
            Some(p(&["mirror", "docs", "big.bin"]))
        );
        assert_eq!(t("../other/x"), Some(p(&["mirror", "other", "x"])));
        // Out of the view, to the view itself, absolute, empty.
        assert_eq!(t("../../etc/passwd"), None);
        assert_eq!(t("../../mirror/docs/big.bin"), None);
        assert_eq!(t(".."), None);
        assert_eq!(t("/etc/passwd"), None);
        assert_eq!(t(""), None);
        // A snapshot's view is two components deep.
        let link = p(&["snapshots", "latest", "a", "link"]);
        assert_eq!(
            resolve_target(&link, OsStr::new("../b"), 2),
            Some(p(&["snapshots", "latest", "b"]))
        );
        assert_eq!(resolve_target(&link, OsStr::new("../../x/b"), 2), None);
    }

    #[test]
    fn request_segments_refuse_dots_and_nul() {
        assert_eq!(segments(b"/a//b/").unwrap(), p(&["a", "b"]));
        assert!(segments(b"/").unwrap().is_empty());
        assert!(segments(b"/a/../b").is_err());
        assert!(segments(b"/a/./b").is_err());
        assert!(segments(b"/a\0b").is_err());
    }
}
