//! nsqlookupd library.
