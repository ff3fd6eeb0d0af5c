//! The server's CPU time and resident memory, read from `/proc/PID`.

use anyhow::{Context, Result, anyhow};

/// Clock ticks per second of `/proc/PID/stat`'s utime and stime. `sysconf(_SC_CLK_TCK)`
/// is 100 on every Linux architecture this runs on (USER_HZ is fixed by the kernel ABI),
/// and reading it would need `unsafe` FFI, which the workspace forbids.
pub const CLK_TCK: f64 = 100.0;

/// One reading of a process (or the sum over several).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// stime alone (CPU time in the kernel: system calls, the network stack
    /// the server's own writes run through loopback), in clock ticks.
    pub sys_ticks: u64,
    /// VmRSS in KiB.
    pub rss_kib: u64,
}

impl Sample {
    fn add(self, o: Sample) -> Sample {
        Sample {
            cpu_ticks: self.cpu_ticks + o.cpu_ticks,
            sys_ticks: self.sys_ticks + o.sys_ticks,
            rss_kib: self.rss_kib + o.rss_kib,
        }
    }
}

/// Reads `/proc/{pid}/stat` and `/proc/{pid}/status`.
pub fn sample(pid: u32) -> Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is the server pid right and alive?)"))?;
    let (utime, stime) = parse_stat_cpu(&stat).ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat format"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss_kib = parse_status_rss(&status).ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(Sample { cpu_ticks: utime + stime, sys_ticks: stime, rss_kib })
}

/// utime and stime (fields 14 and 15; the command name in field 2 may hold
/// spaces and parentheses, so fields are counted after its last `)`).
fn parse_stat_cpu(stat: &str) -> Option<(u64, u64)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds between two samples.
pub fn cpu_secs(before: &Sample, after: &Sample) -> f64 {
    after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / CLK_TCK
}

/// CPU seconds spent in the kernel between two samples.
pub fn sys_secs(before: &Sample, after: &Sample) -> f64 {
    after.sys_ticks.saturating_sub(before.sys_ticks) as f64 / CLK_TCK
}

/// Samples the server when pids were given (the sum over all of them); a
/// failed read is reported and turns into `None` (the run goes on without
/// server figures).
pub fn maybe_sample(pids: &[u32]) -> Option<Sample> {
    Some(total(&maybe_sample_each(pids)?))
}

/// Samples each of the server's processes (in the order given), as
/// [`maybe_sample`] does.
pub fn maybe_sample_each(pids: &[u32]) -> Option<Vec<Sample>> {
    if pids.is_empty() {
        return None;
    }
    let mut each = Vec::with_capacity(pids.len());
    for &pid in pids {
        match sample(pid) {
            Ok(s) => each.push(s),
            Err(e) => {
                eprintln!("warning: {e:#}");
                return None;
            }
        }
    }
    Some(each)
}

/// The sum of several processes' samples.
pub fn total(each: &[Sample]) -> Sample {
    each.iter().fold(Sample::default(), |t, s| t.add(*s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 1 2 3";
        assert_eq!(parse_stat_cpu(stat), Some((250, 75)));
        let status = "Name:\teventfeed\nVmPeak:\t  10 kB\nVmRSS:\t    5120 kB\nThreads: 2\n";
        assert_eq!(parse_status_rss(status), Some(5120));
    }

    #[test]
    fn reads_this_process() -> Result<()> {
        let s = sample(std::process::id())?;
        assert!(s.rss_kib > 0);
        let both = maybe_sample(&[std::process::id(), std::process::id()]).ok_or_else(|| anyhow!("no sample"))?;
        assert!(both.rss_kib > s.rss_kib && both.cpu_ticks >= s.cpu_ticks);
        Ok(())
    }
}
