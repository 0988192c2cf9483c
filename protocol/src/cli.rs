//! Command-line conventions shared by every nsq-rs binary, so existing NSQ command lines
//! and config files work unchanged: Go's single-dash long flags, Go's duration syntax, and
//! NSQ's TOML config files (`--config`).

use std::time::Duration;

/// Parse a Go-style duration: a sequence of `<number><unit>` with units ns, us, µs, ms, s,
/// m, h (e.g. `1m30s`, `250ms`, `1.5h`). As in Go, a number without a unit is an error
/// (except `0`): `--msg-timeout=10` must not silently mean 10 ms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.parse::<f64>().is_ok() {
        return Err(format!(
            "missing unit in duration {s:?} (use e.g. {s}ms or {s}s)"
        ));
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

/// How a daemon's NSQ config file maps onto its flags.
pub struct ConfigSpec<'a> {
    /// Long flag names the binary accepts (without `--`).
    pub flags: Vec<String>,
    /// Config keys whose flag is not simply the key with `-` for `_` (NSQ's `cfg` names,
    /// e.g. `nsqlookupd_tcp_addresses` for `--lookupd-tcp-address`).
    pub renames: &'a [(&'a str, &'a str)],
    /// Flags that take a duration: an integer in the file means milliseconds, as in NSQ.
    pub durations: &'a [&'a str],
}

/// The arguments with `--config FILE` expanded: every key of the file becomes a flag placed
/// before the command line's own. A flag given on the command line replaces the file's value
/// (for a repeatable flag, the file's whole list), as in NSQ. Unknown keys are not fatal:
/// they come back as warnings for the caller to log once logging is up.
pub fn with_config_file(
    args: Vec<String>,
    spec: &ConfigSpec<'_>,
) -> Result<(Vec<String>, Vec<String>), String> {
    let mut path = None;
    let mut it = args.iter().enumerate();
    while let Some((i, a)) = it.next() {
        if let Some(p) = a.strip_prefix("--config=") {
            path = Some(p.to_string());
        } else if a == "--config" {
            path = args.get(i + 1).cloned();
            it.next();
        }
    }
    let Some(path) = path else {
        return Ok((args, Vec::new()));
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read config {path}: {e}"))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("invalid config {path}: {e}"))?;
    let on_command_line = |flag: &str| {
        let long = format!("--{flag}");
        let with_eq = format!("--{flag}=");
        args.iter()
            .skip(1)
            .any(|a| *a == long || a.starts_with(&with_eq))
    };
    let mut flags = Vec::new();
    let mut warnings = Vec::new();
    for (key, value) in table {
        let flag = spec
            .renames
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, f)| f.to_string())
            .unwrap_or_else(|| key.replace('_', "-"));
        if flag == "config" || !spec.flags.contains(&flag) {
            warnings.push(format!("config {path}: ignoring unknown key {key:?}"));
            continue;
        }
        if on_command_line(&flag) {
            continue;
        }
        let is_duration = spec.durations.contains(&flag.as_str());
        let mut push = |v: &toml::Value| -> Result<(), String> {
            let s = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) if is_duration => format!("{i}ms"),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => return Err(format!("config key {key}: unsupported value {other}")),
            };
            flags.push(format!("--{flag}={s}"));
            Ok(())
        };
        match &value {
            toml::Value::Array(items) => {
                for v in items {
                    push(v)?;
                }
            }
            v => push(v)?,
        }
    }
    let mut out = Vec::with_capacity(args.len() + flags.len());
    let mut args = args.into_iter();
    if let Some(prog) = args.next() {
        out.push(prog);
    }
    out.extend(flags);
    out.extend(args);
    Ok((out, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_flags() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(
            parse_duration("1500").is_err(),
            "no unit is an error, as in Go"
        );
        assert!(parse_duration("1.5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        let a = normalize_args(["bin", "-topic=t", "--x", "-n", "5"].map(String::from));
        assert_eq!(a, vec!["bin", "--topic=t", "--x", "-n", "5"]);
    }

    #[test]
    fn config_file_keys() {
        let dir = std::env::temp_dir().join(format!("nsq-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.cfg");
        std::fs::write(
            &p,
            "msg_timeout = 45000\nnsqlookupd_tcp_addresses = [\"a:1\", \"b:2\"]\nbogus = 1\nmem_queue_size = 5\n",
        )
        .unwrap();
        let spec = ConfigSpec {
            flags: ["msg-timeout", "lookupd-tcp-address", "mem-queue-size"]
                .map(String::from)
                .to_vec(),
            renames: &[("nsqlookupd_tcp_addresses", "lookupd-tcp-address")],
            durations: &["msg-timeout"],
        };
        let (args, warnings) = with_config_file(
            vec![
                "nsqd".into(),
                format!("--config={}", p.display()),
                "--mem-queue-size=7".into(),
            ],
            &spec,
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(args.contains(&"--msg-timeout=45000ms".to_string()));
        assert!(args.contains(&"--lookupd-tcp-address=a:1".to_string()));
        assert!(args.contains(&"--lookupd-tcp-address=b:2".to_string()));
        assert!(!args.contains(&"--mem-queue-size=5".to_string()));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("bogus"));
    }
}
