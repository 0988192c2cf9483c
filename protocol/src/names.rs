//! Topic and channel names, as NSQ accepts them: 1 to 64 characters from
//! `[.a-zA-Z0-9_-]`, optionally ending in `#ephemeral` (which counts toward the 64).
//! Names are checked before they reach the file system or any map.

pub const MAX_NAME_LENGTH: usize = 64;
pub const EPHEMERAL_SUFFIX: &str = "#ephemeral";

fn is_valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LENGTH {
        return false;
    }
    let base = name.strip_suffix(EPHEMERAL_SUFFIX).unwrap_or(name);
    !base.is_empty()
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

pub fn is_valid_topic_name(name: &str) -> bool {
    is_valid_name(name)
}

pub fn is_valid_channel_name(name: &str) -> bool {
    is_valid_name(name)
}

pub fn is_ephemeral(name: &str) -> bool {
    name.ends_with(EPHEMERAL_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid() {
        for ok in ["a", "test", "a.b_c-d", "x#ephemeral", "..", &"a".repeat(64)] {
            assert!(is_valid_topic_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "#ephemeral",
            "a#eph",
            "ä",
            &"a".repeat(65),
            "a\n",
            "a:b",
        ] {
            assert!(!is_valid_topic_name(bad), "{bad}");
            assert!(!is_valid_channel_name(bad), "{bad}");
        }
        assert!(is_ephemeral("x#ephemeral"));
        assert!(!is_ephemeral("x"));
    }
}
