//! Wire formats shared by nsqd, nsqlookupd and the client: TCP protocol V2 frames and
//! commands, IDENTIFY, names, the nsqlookupd V1 protocol, stream compression, CLI conventions.
//! No IO here: every function works on byte buffers, so all of it can be unit- and
//! fuzz-tested.

#![forbid(unsafe_code)]

pub mod cli;
pub mod compression;
pub mod identify;
pub mod lookup;
pub mod names;
pub mod v2;
