//! The result of a reconcile pass: the types live in [`redmirror_api::report`]
//! (shared with `/v1/status` readers); re-exported here.

pub use redmirror_api::report::{Barrier, FlowDrift, Report, MAX_LISTED};
