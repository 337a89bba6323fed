//! Raising `RLIMIT_MEMLOCK` for io_uring.

/// What [`raise_memlock_limit`] managed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemlockStatus {
    /// The soft limit is now unlimited.
    Unlimited,
    /// The soft limit was raised to the hard limit, which is finite (bytes).
    RaisedTo(u64),
    /// Raising failed; the limit stays at this many bytes.
    Unchanged { current: u64, errno: i32 },
}

impl std::fmt::Display for MemlockStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unlimited => write!(f, "RLIMIT_MEMLOCK is unlimited"),
            Self::RaisedTo(n) => write!(
                f,
                "RLIMIT_MEMLOCK raised to its hard limit of {} KiB",
                n / 1024
            ),
            Self::Unchanged { current, errno } => write!(
                f,
                "could not raise RLIMIT_MEMLOCK (errno {errno}); it stays at {} KiB, which may be too little for \
                 io_uring on kernels before 5.12: run as root, grant CAP_SYS_RESOURCE, or set LimitMEMLOCK=infinity",
                current / 1024
            ),
        }
    }
}

/// Lifts the soft `RLIMIT_MEMLOCK` to unlimited, or else to the hard limit.
pub fn raise_memlock_limit() -> MemlockStatus {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return MemlockStatus::Unchanged {
            current: 0,
            errno: errno(),
        };
    }
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
        return MemlockStatus::Unlimited;
    }
    let to_hard = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if lim.rlim_max != lim.rlim_cur
        && unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &to_hard) } == 0
    {
        return if lim.rlim_max == libc::RLIM_INFINITY {
            MemlockStatus::Unlimited
        } else {
            MemlockStatus::RaisedTo(lim.rlim_max)
        };
    }
    MemlockStatus::Unchanged {
        current: lim.rlim_cur,
        errno: errno(),
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
