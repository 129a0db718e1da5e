//! How many CPUs this process may use: the default number of workers.
//!
//! What `std::thread::available_parallelism` answers (the CPUs in the
//! affinity mask, fewer if a cgroup v2 quota says so), found without
//! allocating: std's reads its files into `String`s, and a failed
//! allocation there would abort `coro_runtime_new` instead of answering
//! `CORO_ENOMEM`. Files are read into fixed buffers; anything unexpected
//! in them is ignored, never an error.

/// At least 1.
pub fn available() -> usize {
    let cpus = affinity().unwrap_or_else(online);
    let quota = cgroup_quota().unwrap_or(usize::MAX);
    cpus.min(quota).max(1)
}

#[cfg(target_os = "linux")]
fn affinity() -> Option<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: the size is the set's own; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, core::mem::size_of_val(&set), &mut set) };
    // SAFETY: `set` was filled by the kernel (or stayed empty).
    let n = if rc == 0 {
        unsafe { libc::CPU_COUNT(&set) }
    } else {
        0
    };
    (n > 0).then_some(n as usize)
}

#[cfg(not(target_os = "linux"))]
fn affinity() -> Option<usize> {
    None
}

fn online() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}

/// The tightest cgroup v2 CPU quota on the way from this process's cgroup
/// up to the root (`cpu.max`: "quota period", or "max"), rounded up.
#[cfg(target_os = "linux")]
fn cgroup_quota() -> Option<usize> {
    let mut buf = [0u8; 1024];
    let text = read_file(b"/proc/self/cgroup\0", &mut buf)?;
    // cgroup v2 has one line: "0::/path".
    let line = text
        .split(|&b| b == b'\n')
        .find(|l| l.starts_with(b"0::"))?;
    let mut path = &line[3..];
    let mut best: Option<usize> = None;
    loop {
        if let Some(q) = quota_at(path) {
            best = Some(best.map_or(q, |b| b.min(q)));
        }
        match path.iter().rposition(|&b| b == b'/') {
            Some(0) if path.len() > 1 => path = b"/",
            Some(i) if i > 0 => path = &path[..i],
            _ => return best,
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn cgroup_quota() -> Option<usize> {
    None
}

/// `/sys/fs/cgroup<path>/cpu.max` as a CPU count, if it sets a quota.
#[cfg(target_os = "linux")]
fn quota_at(path: &[u8]) -> Option<usize> {
    const ROOT: &[u8] = b"/sys/fs/cgroup";
    const FILE: &[u8] = b"/cpu.max\0";
    let mut name = [0u8; 512];
    let len = ROOT.len() + path.len() + FILE.len();
    if len > name.len() || path.contains(&0) {
        return None;
    }
    name[..ROOT.len()].copy_from_slice(ROOT);
    name[ROOT.len()..ROOT.len() + path.len()].copy_from_slice(path);
    name[ROOT.len() + path.len()..len].copy_from_slice(FILE);
    let mut buf = [0u8; 64];
    let text = read_file(&name[..len], &mut buf)?;
    let mut fields = text.split(|&b| b == b' ' || b == b'\n');
    let quota = parse(fields.next()?)?;
    let period = parse(fields.next()?)?;
    (period > 0).then(|| quota.div_ceil(period).max(1))
}

#[cfg(target_os = "linux")]
fn parse(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + (d - b'0') as usize)
    })
}

/// Reads the NUL-terminated `name` into `buf`; the bytes read.
#[cfg(target_os = "linux")]
fn read_file<'a>(name: &[u8], buf: &'a mut [u8]) -> Option<&'a [u8]> {
    // SAFETY: `name` ends with a NUL (the callers make it so).
    let fd = unsafe { libc::open(name.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: reads into the unfilled tail of `buf`.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    // SAFETY: our own descriptor, closed once.
    unsafe { libc::close(fd) };
    Some(&buf[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_std() {
        let std = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(available(), std);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn parses_only_digits() {
        assert_eq!(parse(b"200000"), Some(200_000));
        assert_eq!(parse(b"max"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"12a"), None);
    }
}
