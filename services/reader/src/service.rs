//! `vigil.query.v1.QueryService` over gRPC: who may ask (from the
//! certificate), then the shared query layer.

use sqlx::PgPool;
use tonic::{Request, Response, Status};
use vigil_common::error::ApiError;
use vigil_common::identity::{Identity, PeerInfo};
use vigil_common::policy::{LivePolicy, Role};
use vigil_proto::query::v1::query_service_server::QueryService;
use vigil_proto::query::v1::{
    GetEventRequest, GetEventResponse, GetFindingRequest, GetFindingResponse, ListEventsRequest,
    ListEventsResponse, ListFindingsRequest, ListFindingsResponse,
};

use crate::query::{self, EventQuery, FindingQuery, TenantScope};

#[derive(Clone)]
pub struct QueryApi {
    pool: PgPool,
    policy: LivePolicy,
}

impl QueryApi {
    pub fn new(pool: PgPool, policy: LivePolicy) -> Self {
        Self { pool, policy }
    }

    /// The tenants the caller may see: users per the policy file; devices,
    /// services and users without a grant may not query.
    fn caller_scope<T>(&self, request: &Request<T>) -> Result<TenantScope, ApiError> {
        let info = request
            .extensions()
            .get::<PeerInfo>()
            .ok_or_else(|| ApiError::Unauthenticated("no verified client certificate".into()))?;
        let identity = match &info.identity {
            Ok(identity @ Identity::User { .. }) => identity,
            Ok(other) => {
                return Err(ApiError::PermissionDenied(format!(
                    "{other} is not a user; only users may query"
                )));
            }
            Err(e) => return Err(ApiError::Unauthenticated(e.to_string())),
        };
        match self.policy.role_of(identity) {
            Some(Role::Admin) => Ok(TenantScope::All),
            Some(Role::Analyst { tenants }) => Ok(TenantScope::Only(tenants)),
            None => Err(ApiError::PermissionDenied(format!(
                "{identity} has no grant in the policy"
            ))),
        }
    }
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let scope = self.caller_scope(&request)?;
        let query = EventQuery::parse(request.get_ref())?;
        Ok(Response::new(
            query::list_events(&self.pool, &scope, &query).await?,
        ))
    }

    async fn get_event(
        &self,
        request: Request<GetEventRequest>,
    ) -> Result<Response<GetEventResponse>, Status> {
        let scope = self.caller_scope(&request)?;
        let event = query::get_event(&self.pool, &scope, request.get_ref()).await?;
        Ok(Response::new(GetEventResponse { event: Some(event) }))
    }

    async fn list_findings(
        &self,
        request: Request<ListFindingsRequest>,
    ) -> Result<Response<ListFindingsResponse>, Status> {
        let scope = self.caller_scope(&request)?;
        let query = FindingQuery::parse(request.get_ref())?;
        Ok(Response::new(
            query::list_findings(&self.pool, &scope, &query).await?,
        ))
    }

    async fn get_finding(
        &self,
        request: Request<GetFindingRequest>,
    ) -> Result<Response<GetFindingResponse>, Status> {
        let scope = self.caller_scope(&request)?;
        Ok(Response::new(
            query::get_finding(&self.pool, &scope, request.get_ref()).await?,
        ))
    }
}
