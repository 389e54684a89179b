//! The query layer shared by the gRPC service and the NATS responder;
//! neither builds SQL.
//!
//! - [`request`]: requests turned into validated queries.
//! - [`page_token`]: signed keyset page tokens.
//! - [`sql`]: the SQL, run in row-level-security-scoped transactions with
//!   the caller's deadline, and rows decoded.

pub mod page_token;
pub mod request;
pub mod sql;

pub use page_token::PageTokens;
pub use request::{EventQuery, FindingQuery};
pub use sql::{
    Db, ORDERED_WALK, get_event, get_finding, list_audit, list_events, list_events_sql,
    list_findings,
};

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// Which tenants a caller may see. `All` is for callers the reader trusts
/// with every tenant (today: every user identity, and the NATS API whose
/// callers NATS permissions restrict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    All,
    Only(Vec<String>),
}

/// Who is asking: the identity page tokens are bound to (and audit names),
/// and the tenants it may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub scope: TenantScope,
}
