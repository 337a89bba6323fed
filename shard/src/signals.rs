//! SIGTERM, SIGINT and SIGHUP, handled on a thread of their own.

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread, and so in every
/// thread it starts afterwards, and runs `on_stop` with the signal number
/// (SIGTERM, SIGINT) or `on_hangup` (SIGHUP) on a dedicated thread
/// (`kafscale-signals`) each time one arrives (a second signal can cut short
/// what the first one started). Call it before starting any other thread: a
/// thread started earlier could receive the signal with its default action,
/// which ends the process.
pub fn on_signals(
    on_stop: impl Fn(i32) + Send + 'static,
    on_hangup: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use;
    // pthread_sigmask only reads the set we own.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
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
                if sig == libc::SIGHUP {
                    on_hangup();
                } else {
                    on_stop(sig);
                }
            }
        })?;
    Ok(())
}
