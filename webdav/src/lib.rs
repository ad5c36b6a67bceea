//! A read-only WebDAV server over the neutral read-only tree ([`ReadOnlyFs`]): the third
//! adapter beside FUSE and WinFsp, for machines that have neither (and for browsers).
//!
//! `dav_server` answers OPTIONS, PROPFIND and GET/HEAD of files (ranges, ETag,
//! Last-Modified, conditional requests) through [`davfs::DavTree`]. In front of it,
//! [`server::Server`] checks credentials, refuses every write method (405), refuses
//! `Depth: infinity` (403, as RFC 4918 allows), bounds ranges and request bodies, refuses
//! paths with `.`/`..`/`%2f`/NUL components, and answers GET on a folder with its own HTML
//! page (`dav_server`'s index hides dot-files and mangles non-UTF-8 names).
//!
//! [`ReadOnlyFs`]: backup_platform::rofs::ReadOnlyFs

pub mod auth;
pub mod davfs;
pub mod listing;
pub mod server;
pub mod tls;

pub use auth::BasicAuth;
pub use davfs::LinkScope;
pub use server::{Config, Server};
pub use tls::server_config;
