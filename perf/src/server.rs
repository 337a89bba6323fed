//! Samples a server process's CPU time and memory from /proc.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// utime + stime of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // /proc reports clock ticks of USER_HZ, which Linux fixes at 100 for userspace.
    Some((utime + stime) / 100.0)
}

pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Samples RSS every 50 ms and keeps the peak.
pub struct Sampler {
    pid: u32,
    cpu_start: f64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub struct Usage {
    pub cpu_seconds: f64,
    pub peak_rss: u64,
}

impl Sampler {
    pub fn start(pid: u32) -> anyhow::Result<Self> {
        let cpu_start = cpu_seconds(pid)
            .ok_or_else(|| anyhow::anyhow!("cannot read /proc/{pid}/stat (--server-pid)"))?;
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(r) = rss_bytes(pid) {
                    p.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Ok(Self {
            pid,
            cpu_start,
            peak,
            stop,
            thread: Some(thread),
        })
    }

    pub fn finish(mut self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Usage {
            cpu_seconds: cpu_seconds(self.pid).unwrap_or(self.cpu_start) - self.cpu_start,
            peak_rss: self.peak.load(Ordering::Relaxed),
        }
    }
}
