//! Home's files served to a node: the requests a node's agent makes of home's deputy for the
//! job whose files stay at home (see `docs/served-files.md`), and the answers. Paths are the
//! job's own (absolute, as at home); data travels beside the message, not inside it.

use serde::{Deserialize, Serialize};

/// A file request (node -> home) or its answer (home -> node). The data of a `Write` or of a
/// `Read`'s answer is the frame's payload after the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FileMsg {
    Ask {
        id: u64,
        op: FileOp,
    },
    Answer {
        id: u64,
        answer: Result<Answer, i32>,
    },
}

/// An operation on home's files. Handles are home's (from `Open`); errors are errno values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FileOp {
    /// lstat(2).
    Lstat {
        path: Vec<u8>,
    },
    /// The names in a directory with their kinds and inode numbers.
    List {
        path: Vec<u8>,
    },
    ReadLink {
        path: Vec<u8>,
    },
    /// open(2) with these flags (and mode, with O_CREAT); answers a handle and the attributes.
    Open {
        path: Vec<u8>,
        flags: i32,
        mode: u32,
    },
    /// `size` bytes at `offset`, answered as `Data` (short at the end of the file).
    Read {
        handle: u64,
        offset: u64,
        size: u32,
    },
    /// The payload at `offset`. Not answered: a failure is told by the next `Flush`, `Fsync`
    /// or `Close` of the handle (write-behind, in order on the connection).
    Write {
        handle: u64,
        offset: u64,
    },
    /// close(2) semantics for one descriptor of the handle: the first failed write since.
    Flush {
        handle: u64,
    },
    Fsync {
        handle: u64,
        data_only: bool,
    },
    /// The last reference is gone.
    Close {
        handle: u64,
    },
    SetAttr {
        path: Vec<u8>,
        handle: Option<u64>,
        set: SetAttr,
    },
    Mkdir {
        path: Vec<u8>,
        mode: u32,
    },
    Unlink {
        path: Vec<u8>,
    },
    Rmdir {
        path: Vec<u8>,
    },
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
        flags: u32,
    },
    Symlink {
        target: Vec<u8>,
        path: Vec<u8>,
    },
    Link {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// access(2) with the effective ids.
    Access {
        path: Vec<u8>,
        mask: i32,
    },
    StatFs {
        path: Vec<u8>,
    },
}

/// What `SetAttr` changes (each `None` is left as it is). Times in ns since the epoch; `Some(-1)`
/// means now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime_ns: Option<i128>,
    pub mtime_ns: Option<i128>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    Attr(Attr),
    List(Vec<DirEntry>),
    Target(Vec<u8>),
    Opened {
        handle: u64,
        attr: Attr,
    },
    /// The bytes are the frame's payload.
    Data,
    Done,
    StatFs(StatFs),
}

/// The attributes of a file at home, as lstat(2) gives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    pub dev: u64,
    pub ino: u64,
    /// `st_mode`: type and permissions.
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime_ns: i128,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    /// `st_mode & S_IFMT` of the entry (0 when unknown).
    pub kind: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}
