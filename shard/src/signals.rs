//! SIGTERM and SIGINT, handled on a thread of their own.

/// Blocks SIGTERM and SIGINT in the calling thread, and so in every thread
/// it starts afterwards, and runs `f` with the signal number on a dedicated
/// thread (`kafscale-signals`) each time one arrives (a second signal can
/// cut short what the first one started). Call it before starting any other
/// thread.
pub fn on_termination(f: impl Fn(i32) + Send + 'static) -> std::io::Result<()> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use;
    // pthread_sigmask only reads the set we own.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        set
    };
    std::thread::Builder::new()
        .name("kafscale-signals".into())
        .spawn(move || {
            loop {
                let mut sig = 0;
                // SAFETY: `set` is a valid signal set and `sig` a valid out-pointer.
                let rc = unsafe { libc::sigwait(&set, &mut sig) };
                if rc != 0 {
                    return;
                }
                f(sig);
            }
        })?;
    Ok(())
}
