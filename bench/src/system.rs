//! Facts about the machine and the processes measured: CPU model, core
//! count, the date, resident memory (sampled in the background for a peak),
//! open file descriptors, and this process's file-descriptor limit.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often [`RssSampler`] reads the resident set size.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// The CPU model from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`: other work
/// on the machine skews every number.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|line| {
            line.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Logical cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// How often [`ProcessSampler`] reads another process's memory and
/// descriptors (counting thousands of descriptors is not free).
const PROCESS_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// This process's resident set size in bytes (`VmRSS`), or 0 when
/// `/proc/self/status` cannot be read.
pub fn rss_bytes() -> u64 {
    status_rss("/proc/self/status")
}

/// The resident set size of process `pid` in bytes, or 0 when unknown.
pub fn rss_of(pid: u32) -> u64 {
    status_rss(&format!("/proc/{pid}/status"))
}

/// How many file descriptors process `pid` has open, or 0 when unknown.
pub fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn status_rss(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

/// Name of the [`RssSampler`] thread, so its CPU time can be told apart.
const SAMPLER_THREAD: &str = "rss-sampler";

/// Kernel clock ticks per second in `/proc/*/stat` (`USER_HZ`, 100 on every
/// mainstream Linux architecture).
const USER_HZ: f64 = 100.0;

/// CPU time this process has used, split by who used it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    /// The whole process, exited threads included (10 ms resolution).
    pub process: Duration,
    /// The thread whose name starts with `thread_prefix`.
    pub named: Duration,
    /// The main thread (the load generator).
    pub main: Duration,
    /// The memory sampler.
    pub sampler: Duration,
}

impl CpuTimes {
    /// Reads the counters now; `thread_prefix` names the thread to count
    /// apart (as `/proc` shows it: at most 15 bytes).
    pub fn now(thread_prefix: &str) -> CpuTimes {
        let mut times = CpuTimes {
            process: process_cpu(),
            ..CpuTimes::default()
        };
        let pid = std::process::id().to_string();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return times;
        };
        for task in tasks.flatten() {
            let dir = task.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let comm = comm.trim_end();
            let used = thread_cpu(&dir);
            if task.file_name().to_str() == Some(pid.as_str()) {
                times.main += used;
            } else if comm == SAMPLER_THREAD {
                times.sampler += used;
            } else if comm.starts_with(thread_prefix) {
                times.named += used;
            }
        }
        times
    }

    /// The time used since `earlier`: `(named thread, main thread, the rest
    /// of the process)`.
    pub fn since(&self, earlier: &CpuTimes) -> (Duration, Duration, Duration) {
        let named = self.named.saturating_sub(earlier.named);
        let main = self.main.saturating_sub(earlier.main);
        let sampler = self.sampler.saturating_sub(earlier.sampler);
        let rest = self
            .process
            .saturating_sub(earlier.process)
            .saturating_sub(named + main + sampler);
        (named, main, rest)
    }
}

/// User plus system time of the whole process, from `/proc/self/stat`.
fn process_cpu() -> Duration {
    stat_cpu("/proc/self/stat")
}

/// User plus system time process `pid` has used (10 ms resolution).
pub fn cpu_of(pid: u32) -> Duration {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

fn stat_cpu(path: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after the name.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|field| field.parse::<u64>().ok())
        .sum();
    Duration::from_secs_f64(ticks as f64 / USER_HZ)
}

/// CPU time every core of the machine has spent busy (not idle or waiting
/// for I/O), from `/proc/stat`: other work on the machine shows as busy
/// time no measured process used.
pub fn machine_busy() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already
    // in user).
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    Duration::from_secs_f64(busy as f64 / USER_HZ)
}

/// Time one thread has run, in nanoseconds, from its `schedstat`.
fn thread_cpu(task_dir: &Path) -> Duration {
    std::fs::read_to_string(task_dir.join("schedstat"))
        .ok()
        .and_then(|line| line.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// Samples [`rss_bytes`] on a thread of its own until stopped, keeping the
/// peak.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl RssSampler {
    pub fn start() -> anyhow::Result<RssSampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let sample = move || {
            let mut peak = rss_bytes();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(RSS_SAMPLE_INTERVAL);
                peak = peak.max(rss_bytes());
            }
            peak
        };
        let thread = std::thread::Builder::new()
            .name(SAMPLER_THREAD.to_owned())
            .spawn(sample)?;
        Ok(RssSampler { stop, thread })
    }

    /// Stops sampling; the peak resident set size in bytes.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// The peaks [`ProcessSampler`] saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessPeaks {
    pub rss: u64,
    pub fds: usize,
}

/// Samples another process's resident memory and open descriptors on a
/// thread of its own until stopped, keeping the peaks.
pub struct ProcessSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<ProcessPeaks>,
}

impl ProcessSampler {
    pub fn start(pid: u32) -> anyhow::Result<ProcessSampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let sample = move || {
            let mut peaks = ProcessPeaks::default();
            loop {
                peaks.rss = peaks.rss.max(rss_of(pid));
                peaks.fds = peaks.fds.max(fds_of(pid));
                if flag.load(Ordering::Relaxed) {
                    return peaks;
                }
                std::thread::sleep(PROCESS_SAMPLE_INTERVAL);
            }
        };
        let thread = std::thread::Builder::new()
            .name(SAMPLER_THREAD.to_owned())
            .spawn(sample)?;
        Ok(ProcessSampler { stop, thread })
    }

    /// Stops sampling (after one last sample); the peaks.
    pub fn finish(self) -> ProcessPeaks {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Raises this process's soft limit on open files to its hard limit (child
/// processes inherit it); the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    format_utc(secs)
}

fn format_utc(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rest = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn reads_own_memory() {
        assert!(rss_bytes() > 0);
        assert!(rss_of(std::process::id()) > 0);
    }

    #[test]
    fn counts_descriptors_and_raises_their_limit() {
        assert!(raise_fd_limit() > 0);
        let pid = std::process::id();
        // Other tests open and close descriptors meanwhile: count only a
        // floor this test holds itself.
        let files: Vec<_> = (0..64)
            .map(|_| std::fs::File::open("/proc/self/status").expect("opens"))
            .collect();
        assert!(fds_of(pid) >= files.len());
        let peaks = ProcessSampler::start(pid).expect("starts").finish();
        assert!(peaks.rss > 0 && peaks.fds >= files.len(), "{peaks:?}");
    }

    #[test]
    fn reads_busy_time() {
        assert!(machine_busy() > Duration::ZERO);
        assert!(machine_busy() >= cpu_of(std::process::id()));
    }

    #[test]
    fn counts_cpu_time_by_thread() {
        let before = CpuTimes::now("cpu-burner");
        let burner = std::thread::Builder::new()
            .name("cpu-burner".to_owned())
            .spawn(move || {
                // Burns until the thread has had 60 ms of CPU, however busy
                // the machine is (at most 60 s of wall time).
                let start = std::time::Instant::now();
                let mut x = 0u64;
                loop {
                    let lap = std::time::Instant::now();
                    while lap.elapsed() < Duration::from_millis(10) {
                        x = x.wrapping_add(std::hint::black_box(1));
                    }
                    let after = CpuTimes::now("cpu-burner");
                    let (named, _, _) = after.since(&before);
                    if named >= Duration::from_millis(60)
                        || start.elapsed() > Duration::from_secs(60)
                    {
                        std::hint::black_box(x);
                        return after;
                    }
                }
            })
            .expect("thread");
        let after = burner.join().expect("joins");
        let (named, _main, _rest) = after.since(&before);
        assert!(named >= Duration::from_millis(50), "{named:?}");
    }
}
