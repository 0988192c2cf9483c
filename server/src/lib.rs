//! nsqd library.
