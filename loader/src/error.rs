//! The loader's error: which input, where in it, and why.

use std::fmt;
use thiserror::Error;

/// What went wrong with a kernel or initrd.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Reason {
    #[error("file is truncated: {0}")]
    Truncated(String),
    #[error("not a kernel pvkexec can read (no ELF, gzip or bzImage magic)")]
    UnknownFormat,
    #[error("bzImage: {0}")]
    BzImage(String),
    #[error("{format} payload: {reason}")]
    Decompress {
        format: &'static str,
        reason: String,
    },
    #[error("{format} payload decompresses past {limit} bytes, more than {what}")]
    TooLarge {
        format: &'static str,
        limit: u64,
        what: &'static str,
    },
    #[error("ELF: {0}")]
    Elf(String),
    #[error("Xen ELF note: {0}")]
    Note(String),
    #[error("not a 64-bit Xen PV kernel: {0}")]
    NotPv(String),
    #[error("layout: {0}")]
    Layout(String),
    /// The planner's own refusal, kept typed.
    #[error("layout: {0}")]
    Plan(pvlayout::PlanError),
    /// The embedded purgatory ELF cannot be placed.
    #[error("ELF: {0}")]
    Purgatory(crate::purgatory::PurgatoryError),
    #[error("cannot read: {0}")]
    Io(String),
    #[error("cannot write: {0}")]
    Write(String),
    /// The input is the wrong type or size, or an option value does not fit.
    #[error("{0}")]
    Input(String),
    /// The kexec image's header or descriptor table does not match its digest.
    #[error("kexec image: {0}")]
    Image(String),
}

/// An error naming the input (file path or description), the byte offset where it applies,
/// and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub input: String,
    pub offset: Option<u64>,
    pub reason: Reason,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(off) => write!(f, "{}: at offset {:#x}: {}", self.input, off, self.reason),
            None => write!(f, "{}: {}", self.input, self.reason),
        }
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    pub fn new(input: &str, offset: Option<u64>, reason: Reason) -> Self {
        LoadError {
            input: input.to_string(),
            offset,
            reason,
        }
    }
}
