//! nsqlookupd V1 protocol (owned by the lookupd work).
