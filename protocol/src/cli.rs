//! Command-line conventions shared by every nsq-rs binary, so existing NSQ command lines
//! work unchanged: Go's single-dash long flags and Go's duration syntax.

use std::time::Duration;

/// Parse a Go-style duration: a sequence of `<number><unit>` with units ns, us, µs, ms, s,
/// m, h (e.g. `1m30s`, `250ms`, `1.5h`). A bare integer is taken as milliseconds, which is
/// what NSQ's config file uses for numeric durations.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        if num_end == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("invalid number in duration {s:?}"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        total += n * secs;
    }
    if !total.is_finite() || !(0.0..=1e12).contains(&total) {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Turn Go-style single-dash long flags (`-mem-queue-size=0`) into clap's `--` form, so
/// command lines written for NSQ's Go binaries keep working.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in args.into_iter().enumerate() {
        let is_go_long = i > 0
            && a.starts_with('-')
            && !a.starts_with("--")
            && a.len() > 2
            && a[1..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic());
        if is_go_long {
            out.push(format!("-{a}"));
        } else {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_flags() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1500"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        let a = normalize_args(["bin", "-topic=t", "--x", "-n", "5"].map(String::from));
        assert_eq!(a, vec!["bin", "--topic=t", "--x", "-n", "5"]);
    }
}
