//! nsqadmin's logs are every nsq-rs binary's ([`edge::log`]): NSQ's line layout with
//! `--log-prefix`, `--log-level` changeable at runtime through PUT /config/log_level.

pub use edge::log::set_level;

/// Install the global subscriber (later calls do nothing); HTTP client and server crates are
/// held at warn.
pub fn init(level: &str, prefix: &str) -> Result<(), String> {
    edge::log::init(level, prefix, "hyper=warn,reqwest=warn")
}
