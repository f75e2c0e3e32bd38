//! Peak memory of a measurement on Linux: the process's resident-set high-water mark (VmHWM).
//!
//! Before a measurement [`reset_peak`] writes "5" to `/proc/self/clear_refs`, which resets the kernel's
//! high-water mark to the current RSS; afterwards [`peak_rss_bytes`] reads `VmHWM` from `/proc/self/status`.
//! The figure is the whole process (model weights included), which is what a user's run would need. Where
//! either step fails (not Linux, a restricted /proc) the peak is unknown and reported as null. With glibc,
//! freed heap memory is first handed back to the kernel (`malloc_trim`), so that what an earlier
//! measurement freed but the allocator kept resident does not raise the next measurement's baseline.

use std::path::Path;

/// Resets the resident-set high-water mark to the current RSS (after returning free heap memory to the
/// kernel where the allocator supports it). Returns false when it could not.
pub fn reset_peak() -> bool {
    release_free_heap();
    std::fs::write(Path::new("/proc/self/clear_refs"), b"5").is_ok()
}

/// Returns free heap pages of every malloc arena to the kernel (glibc only; elsewhere nothing).
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim takes a byte count, touches only the allocator's free lists and is
        // thread-safe; the Rust global allocator is the system malloc here.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// The resident-set high-water mark in bytes since the last [`reset_peak`] (or process start).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// The `VmHWM:` line of a `/proc/<pid>/status` text, in bytes (the kernel reports kB = 1024 bytes).
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let scale = match parts.next() {
        Some("kB") | Some("KB") | Some("kb") => 1024,
        Some("mB") | Some("MB") => 1024 * 1024,
        Some(_) => return None,
        None => 1,
    };
    value.checked_mul(scale)
}

/// Runs `f` and returns its result with the peak RSS during it (`None` when it cannot be measured).
pub fn with_peak<T>(f: impl FnOnce() -> T) -> (T, Option<u64>) {
    let reset = reset_peak();
    let out = f();
    let peak = if reset { peak_rss_bytes() } else { None };
    (out, peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_hwm_lines() {
        let status =
            "Name:\tattnscope\nVmPeak:\t  123456 kB\nVmHWM:\t    1756 kB\nVmRSS:\t    1700 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(1756 * 1024));
        assert_eq!(parse_vm_hwm("VmHWM: 12\n"), Some(12));
        assert_eq!(parse_vm_hwm("VmRSS:\t 1 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\t x kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\t 1 GB\n"), None);
        assert_eq!(parse_vm_hwm(""), None);
    }

    #[test]
    fn peak_covers_an_allocation_or_is_unknown() {
        let (len, peak) = with_peak(|| {
            let v = vec![1u8; 64 << 20];
            std::hint::black_box(&v).len()
        });
        assert_eq!(len, 64 << 20);
        if let Some(peak) = peak {
            assert!(peak >= 64 << 20, "peak {peak}");
        }
    }
}
