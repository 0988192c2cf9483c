//! nsq_to_file's parts, split as NSQ splits them: the file logger (naming, rotation,
//! crash safety), the topic discoverer (consumers and their writer threads), and the
//! segment archiver (`--data-path`, reading the log directly).

pub mod file_logger;
pub mod segments;
pub mod topic_discoverer;
