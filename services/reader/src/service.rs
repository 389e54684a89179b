//! `vigil.query.v1.QueryService` over gRPC: who asks (from the verified
//! certificate, never from the request), which tenants that identity may
//! see (the policy file), the shared query layer, and an audit record of
//! every call.

use std::sync::Arc;

use serde_json::json;
use tonic::{Request, Response, Status};
use vigil_common::error::ApiError;
use vigil_common::identity::{Identity, PeerInfo, Principal};
use vigil_common::policy::{LivePolicy, Role};
use vigil_proto::query::v1::query_service_server::QueryService;
use vigil_proto::query::v1::{
    GetEventRequest, GetEventResponse, GetFindingRequest, GetFindingResponse,
    ListAuditRecordsRequest, ListAuditRecordsResponse, ListEventsRequest, ListEventsResponse,
    ListFindingsRequest, ListFindingsResponse,
};

use crate::audit::Auditor;
use crate::query::{self, Caller, Db, EventQuery, FindingQuery, TenantScope};

#[derive(Clone)]
pub struct QueryApi {
    db: Arc<Db>,
    policy: LivePolicy,
    audit: Auditor,
}

const RPC_LIST_EVENTS: &str = "/vigil.query.v1.QueryService/ListEvents";
const RPC_GET_EVENT: &str = "/vigil.query.v1.QueryService/GetEvent";
const RPC_LIST_FINDINGS: &str = "/vigil.query.v1.QueryService/ListFindings";
const RPC_GET_FINDING: &str = "/vigil.query.v1.QueryService/GetFinding";
const RPC_LIST_AUDIT: &str = "/vigil.query.v1.QueryService/ListAuditRecords";

/// The caller's identity as the audit trail names it.
fn caller_name<T>(request: &Request<T>) -> String {
    match request.extensions().get::<PeerInfo>().map(|i| &i.identity) {
        Some(Ok(identity)) => identity.to_string(),
        Some(Err(e)) => format!("unidentified ({e})"),
        None => "unidentified".into(),
    }
}

impl QueryApi {
    pub fn new(db: Arc<Db>, policy: LivePolicy, audit: Auditor) -> Self {
        Self { db, policy, audit }
    }

    /// Who is calling and which tenants it may see: users per the policy
    /// file; devices, services and users without a grant may not query.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, ApiError> {
        let info = request
            .extensions()
            .get::<PeerInfo>()
            .ok_or_else(|| ApiError::Unauthenticated("no verified client certificate".into()))?;
        let identity = match &info.identity {
            Ok(
                identity @ Identity {
                    principal: Principal::User { .. },
                    ..
                },
            ) => identity,
            Ok(other) => {
                return Err(ApiError::PermissionDenied(format!(
                    "{other} is not a user; only users may query"
                )));
            }
            Err(e) => return Err(ApiError::Unauthenticated(e.to_string())),
        };
        let scope = match self.policy.role_of(identity) {
            Some(Role::Admin) => TenantScope::All,
            Some(Role::Analyst { tenants }) => TenantScope::Only(tenants),
            None => {
                return Err(ApiError::PermissionDenied(format!(
                    "{identity} has no grant in the policy"
                )));
            }
        };
        Ok(Caller {
            name: identity.to_string(),
            scope,
        })
    }
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let deadline = vigil_common::grpc::deadline(request.metadata());
        let r = request.get_ref();
        let filter = crate::audit::list_events_filter(r);
        let result = async {
            let caller = self.caller(&request)?;
            let query = EventQuery::parse(r, &self.db.tokens, &caller.name)?;
            query::list_events(&self.db, &caller, deadline, &query).await
        }
        .await;
        let answer = self
            .audit
            .seal(
                &caller_name(&request),
                RPC_LIST_EVENTS,
                filter,
                result,
                |a| a.events.len(),
            )
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_event(
        &self,
        request: Request<GetEventRequest>,
    ) -> Result<Response<GetEventResponse>, Status> {
        let deadline = vigil_common::grpc::deadline(request.metadata());
        let filter = json!({ "event_id": request.get_ref().event_id });
        let result = async {
            let caller = self.caller(&request)?;
            query::get_event(&self.db, &caller, deadline, request.get_ref()).await
        }
        .await;
        let event = self
            .audit
            .seal(&caller_name(&request), RPC_GET_EVENT, filter, result, |_| 1)
            .await?;
        Ok(Response::new(GetEventResponse { event: Some(event) }))
    }

    async fn list_findings(
        &self,
        request: Request<ListFindingsRequest>,
    ) -> Result<Response<ListFindingsResponse>, Status> {
        let deadline = vigil_common::grpc::deadline(request.metadata());
        let r = request.get_ref();
        let filter = json!({
            "min_severity": r.min_severity,
            "rule_id": r.rule_id,
            "start_time": r.start_time,
            "end_time": r.end_time,
            "limit": r.limit,
            "next_page": !r.page_token.is_empty(),
        });
        let result = async {
            let caller = self.caller(&request)?;
            let query = FindingQuery::parse(r, &self.db.tokens, &caller.name)?;
            query::list_findings(&self.db, &caller, deadline, &query).await
        }
        .await;
        let answer = self
            .audit
            .seal(
                &caller_name(&request),
                RPC_LIST_FINDINGS,
                filter,
                result,
                |a| a.findings.len(),
            )
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_finding(
        &self,
        request: Request<GetFindingRequest>,
    ) -> Result<Response<GetFindingResponse>, Status> {
        let deadline = vigil_common::grpc::deadline(request.metadata());
        let filter = json!({ "finding_id": request.get_ref().finding_id });
        let result = async {
            let caller = self.caller(&request)?;
            query::get_finding(&self.db, &caller, deadline, request.get_ref()).await
        }
        .await;
        let answer = self
            .audit
            .seal(
                &caller_name(&request),
                RPC_GET_FINDING,
                filter,
                result,
                |a| 1 + a.events.len(),
            )
            .await?;
        Ok(Response::new(answer))
    }

    async fn list_audit_records(
        &self,
        request: Request<ListAuditRecordsRequest>,
    ) -> Result<Response<ListAuditRecordsResponse>, Status> {
        let deadline = vigil_common::grpc::deadline(request.metadata());
        let r = request.get_ref();
        let filter = json!({
            "caller": r.caller,
            "before_time": r.before_time,
            "limit": r.limit,
        });
        let result = async {
            let caller = self.caller(&request)?;
            if caller.scope != TenantScope::All {
                return Err(ApiError::PermissionDenied(format!(
                    "{} is not an admin; only admins may read the audit trail",
                    caller.name
                )));
            }
            query::list_audit(&self.db, &caller, deadline, r).await
        }
        .await;
        let records = self
            .audit
            .seal(
                &caller_name(&request),
                RPC_LIST_AUDIT,
                filter,
                result,
                Vec::len,
            )
            .await?;
        Ok(Response::new(ListAuditRecordsResponse { records }))
    }
}
