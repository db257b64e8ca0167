//! Xen error numbers (xen/include/public/errno.h) as a typed error.

use core::fmt;

/// A failed hypercall: the negative value Xen returned, named where Xen names it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum XenError {
    Eperm,
    Enoent,
    Esrch,
    Enxio,
    Eagain,
    Enomem,
    Eacces,
    Efault,
    Ebusy,
    Eexist,
    Einval,
    Enospc,
    Enosys,
    Etime,
    Eopnotsupp,
    /// Any other errno, as the positive number.
    Other(i64),
}

impl XenError {
    /// Decodes a hypercall's return value: `Ok(value)` when non-negative.
    pub fn check(ret: i64) -> Result<u64, XenError> {
        if ret >= 0 {
            Ok(ret as u64)
        } else {
            Err(Self::from_errno(-ret))
        }
    }

    /// Maps a positive Xen errno to its variant.
    pub fn from_errno(errno: i64) -> Self {
        match errno {
            1 => Self::Eperm,
            2 => Self::Enoent,
            3 => Self::Esrch,
            6 => Self::Enxio,
            11 => Self::Eagain,
            12 => Self::Enomem,
            13 => Self::Eacces,
            14 => Self::Efault,
            16 => Self::Ebusy,
            17 => Self::Eexist,
            22 => Self::Einval,
            28 => Self::Enospc,
            38 => Self::Enosys,
            62 => Self::Etime,
            95 => Self::Eopnotsupp,
            n => Self::Other(n),
        }
    }

    /// The positive errno.
    pub fn errno(self) -> i64 {
        match self {
            Self::Eperm => 1,
            Self::Enoent => 2,
            Self::Esrch => 3,
            Self::Enxio => 6,
            Self::Eagain => 11,
            Self::Enomem => 12,
            Self::Eacces => 13,
            Self::Efault => 14,
            Self::Ebusy => 16,
            Self::Eexist => 17,
            Self::Einval => 22,
            Self::Enospc => 28,
            Self::Enosys => 38,
            Self::Etime => 62,
            Self::Eopnotsupp => 95,
            Self::Other(n) => n,
        }
    }

    /// The symbolic name, e.g. `EINVAL`; `None` for an unnamed errno.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::Eperm => "EPERM",
            Self::Enoent => "ENOENT",
            Self::Esrch => "ESRCH",
            Self::Enxio => "ENXIO",
            Self::Eagain => "EAGAIN",
            Self::Enomem => "ENOMEM",
            Self::Eacces => "EACCES",
            Self::Efault => "EFAULT",
            Self::Ebusy => "EBUSY",
            Self::Eexist => "EEXIST",
            Self::Einval => "EINVAL",
            Self::Enospc => "ENOSPC",
            Self::Enosys => "ENOSYS",
            Self::Etime => "ETIME",
            Self::Eopnotsupp => "EOPNOTSUPP",
            Self::Other(_) => return None,
        })
    }
}

impl fmt::Display for XenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "-{} ({})", name, self.errno()),
            None => write!(f, "-errno {}", self.errno()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_names() {
        for n in 1..200 {
            assert_eq!(XenError::from_errno(n).errno(), n);
        }
        assert_eq!(XenError::check(-22), Err(XenError::Einval));
        assert_eq!(XenError::check(5), Ok(5));
        assert_eq!(XenError::Eexist.name(), Some("EEXIST"));
        assert_eq!(XenError::Other(99).name(), None);
    }
}
