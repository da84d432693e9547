//! Home's files on nodes that do not have them (see `docs/served-files.md`): which files a job
//! uses and whether a node has the same ones (`seen`), home's side that carries out a node's
//! requests (`server`), and the restored job's root made of them (`mount`). The node's FUSE
//! file system that asks home lives in the agent.

pub mod mount;
pub mod seen;
pub mod server;
