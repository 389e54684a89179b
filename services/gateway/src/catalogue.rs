//! `vigil.schema.v1.SchemaService`: the schema catalogue, for any
//! authenticated identity (a device maker asks which classes the gateway
//! accepts and what each requires before sending). Answers from the OCSF
//! schema compiled in (`vigil-ocsf`), so it says exactly what `validate`
//! checks.

use tonic::{Request, Response, Status};
use vigil_common::error::ApiError;
use vigil_common::identity::PeerInfo;
use vigil_ocsf::{Class, Requirement as OcsfRequirement};
use vigil_proto::schema::v1::schema_service_server::SchemaService;
use vigil_proto::schema::v1::{
    Activity, Attribute, ClassSummary, GetClassRequest, GetClassResponse, ListClassesRequest,
    ListClassesResponse, Requirement,
};

#[derive(Debug, Clone, Copy, Default)]
pub struct Catalogue;

/// Any verified identity of the trust domain may read the catalogue.
fn authenticated<T>(request: &Request<T>) -> Result<(), ApiError> {
    match request.extensions().get::<PeerInfo>().map(|i| &i.identity) {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(ApiError::Unauthenticated(e.to_string())),
        None => Err(ApiError::Unauthenticated(
            "no verified client certificate".into(),
        )),
    }
}

fn summary(class: &Class) -> ClassSummary {
    ClassSummary {
        uid: class.uid,
        name: class.name.clone(),
        caption: class.caption.clone(),
        category_uid: class.category_uid,
        category_name: class.category_name.clone(),
    }
}

fn supported(uid: i32) -> Option<&'static Class> {
    vigil_ocsf::SUPPORTED_CLASSES
        .contains(&uid)
        .then(|| vigil_ocsf::schema().class(uid))
        .flatten()
}

#[tonic::async_trait]
impl SchemaService for Catalogue {
    async fn list_classes(
        &self,
        request: Request<ListClassesRequest>,
    ) -> Result<Response<ListClassesResponse>, Status> {
        authenticated(&request)?;
        Ok(Response::new(ListClassesResponse {
            ocsf_version: vigil_ocsf::VERSION.into(),
            classes: vigil_ocsf::SUPPORTED_CLASSES
                .iter()
                .filter_map(|uid| supported(*uid))
                .map(summary)
                .collect(),
        }))
    }

    async fn get_class(
        &self,
        request: Request<GetClassRequest>,
    ) -> Result<Response<GetClassResponse>, Status> {
        authenticated(&request)?;
        let uid = request.get_ref().class_uid;
        let class = supported(uid).ok_or_else(|| {
            ApiError::NotFound(format!(
                "OCSF class {uid} (vigil accepts {:?})",
                vigil_ocsf::SUPPORTED_CLASSES
            ))
        })?;
        let mut activities: Vec<Activity> = class
            .activities
            .iter()
            .filter_map(|(id, name)| {
                Some(Activity {
                    id: id.parse().ok()?,
                    name: name.clone(),
                })
            })
            .collect();
        activities.sort_by_key(|a| a.id);
        let attributes = class
            .attributes
            .iter()
            .map(|(name, a)| Attribute {
                name: name.clone(),
                r#type: a.type_name.clone(),
                object_type: a.object_type.clone().unwrap_or_default(),
                requirement: match a.requirement {
                    OcsfRequirement::Required if a.profile.is_none() => Requirement::Required,
                    OcsfRequirement::Required | OcsfRequirement::Recommended => {
                        Requirement::Recommended
                    }
                    OcsfRequirement::Optional => Requirement::Optional,
                } as i32,
                is_array: a.is_array,
                profile: a.profile.clone().unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(GetClassResponse {
            ocsf_version: vigil_ocsf::VERSION.into(),
            class: Some(summary(class)),
            activities,
            attributes,
            json_schema: vigil_ocsf::json_schema(class).to_string(),
        }))
    }
}
