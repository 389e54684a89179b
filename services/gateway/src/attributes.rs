//! Which OCSF attributes an event carries, and their string values: what
//! the schema's requirements and the length limits are checked with. One
//! arm per protobuf field, by its OCSF name; an attribute vigil's contract
//! does not carry is never present.

use vigil_proto::event::v1::{
    Actor, Device, DnsQuery, File, HttpRequest, Metadata, NetworkEndpoint, Observable, Process,
    Product, SecurityEvent, Service, Url, User,
};

/// A node of an event: the event itself or one of its objects.
#[derive(Clone, Copy)]
pub enum Node<'a> {
    Event(&'a SecurityEvent),
    Metadata(&'a Metadata),
    Product(&'a Product),
    Device(&'a Device),
    Actor(&'a Actor),
    User(&'a User),
    Endpoint(&'a NetworkEndpoint),
    Process(&'a Process),
    File(&'a File),
    Query(&'a DnsQuery),
    Http(&'a HttpRequest),
    Url(&'a Url),
    Service(&'a Service),
    Observable(&'a Observable),
}

impl<'a> Node<'a> {
    /// The object attribute `name`, if present.
    pub fn child(self, name: &str) -> Option<Node<'a>> {
        Some(match (self, name) {
            (Node::Event(e), "metadata") => Node::Metadata(e.metadata.as_ref()?),
            (Node::Event(e), "device") => Node::Device(e.device.as_ref()?),
            (Node::Event(e), "actor") => Node::Actor(e.actor.as_ref()?),
            (Node::Event(e), "user") => Node::User(e.user.as_ref()?),
            (Node::Event(e), "src_endpoint") => Node::Endpoint(e.src_endpoint.as_ref()?),
            (Node::Event(e), "dst_endpoint") => Node::Endpoint(e.dst_endpoint.as_ref()?),
            (Node::Event(e), "process") => Node::Process(e.process.as_ref()?),
            (Node::Event(e), "file") => Node::File(e.file.as_ref()?),
            (Node::Event(e), "query") => Node::Query(e.query.as_ref()?),
            (Node::Event(e), "http_request") => Node::Http(e.http_request.as_ref()?),
            (Node::Event(e), "service") => Node::Service(e.service.as_ref()?),
            (Node::Metadata(m), "product") => Node::Product(m.product.as_ref()?),
            (Node::Actor(a), "user") => Node::User(a.user.as_ref()?),
            (Node::Actor(a), "process") => Node::Process(a.process.as_ref()?),
            (Node::Process(p), "file") => Node::File(p.file.as_ref()?),
            (Node::Process(p), "user") => Node::User(p.user.as_ref()?),
            (Node::Process(p), "parent_process") => Node::Process(p.parent_process.as_deref()?),
            (Node::Http(h), "url") => Node::Url(h.url.as_ref()?),
            _ => return None,
        })
    }

    /// Each element of the array attribute `name` that holds objects.
    pub fn children(self, name: &str) -> Vec<Node<'a>> {
        match (self, name) {
            (Node::Event(e), "observables") => e.observables.iter().map(Node::Observable).collect(),
            _ => Vec::new(),
        }
    }

    /// The string attribute `name`, if the node carries one by that name
    /// (empty when unset).
    pub fn text(self, name: &str) -> Option<&'a str> {
        Some(match (self, name) {
            (Node::Event(e), "message") => &e.message,
            (Node::Event(e), "status_detail") => &e.status_detail,
            (Node::Metadata(m), "uid") => &m.uid,
            (Node::Metadata(m), "version") => &m.version,
            (Node::Metadata(m), "tenant_uid") => &m.tenant_uid,
            (Node::Metadata(m), "original_time") => &m.original_time,
            (Node::Product(p), "name") => &p.name,
            (Node::Product(p), "vendor_name") => &p.vendor_name,
            (Node::Product(p), "version") => &p.version,
            (Node::Product(p), "uid") => &p.uid,
            (Node::Device(d), "uid") => &d.uid,
            (Node::Device(d), "name") => &d.name,
            (Node::Device(d), "hostname") => &d.hostname,
            (Node::Device(d), "ip") => &d.ip,
            (Node::User(u), "name") => &u.name,
            (Node::User(u), "uid") => &u.uid,
            (Node::User(u), "domain") => &u.domain,
            (Node::Endpoint(p), "ip") => &p.ip,
            (Node::Endpoint(p), "hostname") => &p.hostname,
            (Node::Endpoint(p), "uid") => &p.uid,
            (Node::Process(p), "name") => &p.name,
            (Node::Process(p), "cmd_line") => &p.cmd_line,
            (Node::Process(p), "uid") => &p.uid,
            (Node::File(f), "name") => &f.name,
            (Node::File(f), "path") => &f.path,
            (Node::File(f), "uid") => &f.uid,
            (Node::Query(q), "hostname") => &q.hostname,
            (Node::Query(q), "type") => &q.r#type,
            (Node::Query(q), "class") => &q.class,
            (Node::Http(h), "http_method") => &h.http_method,
            (Node::Http(h), "user_agent") => &h.user_agent,
            (Node::Url(u), "url_string") => &u.url_string,
            (Node::Url(u), "hostname") => &u.hostname,
            (Node::Url(u), "path") => &u.path,
            (Node::Service(s), "name") => &s.name,
            (Node::Service(s), "uid") => &s.uid,
            (Node::Observable(o), "name") => &o.name,
            (Node::Observable(o), "value") => &o.value,
            _ => return None,
        })
    }

    /// The string array attribute `name` (empty when unset or unknown).
    pub fn texts(self, name: &str) -> &'a [String] {
        match (self, name) {
            (Node::Event(e), "privileges") => &e.privileges,
            (Node::Metadata(m), "profiles") => &m.profiles,
            _ => &[],
        }
    }

    /// Whether the attribute `name` is present (an object, a non-empty
    /// string or array, a non-zero number; `*_id` enums count when set,
    /// since 0 is OCSF's "Unknown").
    pub fn has(self, name: &str) -> bool {
        if self.child(name).is_some() || !self.children(name).is_empty() {
            return true;
        }
        if let Some(text) = self.text(name) {
            return !text.is_empty();
        }
        if !self.texts(name).is_empty() {
            return true;
        }
        match (self, name) {
            (Node::Event(e), "class_uid") => e.class_uid != 0,
            (Node::Event(e), "category_uid") => e.category_uid != 0,
            (Node::Event(_), "activity_id" | "severity_id" | "status_id") => true,
            (Node::Event(e), "type_uid") => e.type_uid != 0,
            (Node::Event(e), "time") => e.time != 0,
            (Node::Event(e), "unmapped") => !e.unmapped.is_empty(),
            (Node::Metadata(m), "logged_time") => m.logged_time != 0,
            (Node::Metadata(m), "sequence") => m.sequence != 0,
            (Node::Device(_) | Node::User(_) | Node::File(_) | Node::Observable(_), "type_id") => {
                true
            }
            (Node::Endpoint(p), "port") => p.port != 0,
            (Node::Process(p), "pid") => p.pid != 0,
            (Node::File(f), "size") => f.size != 0,
            (Node::Url(u), "port") => u.port != 0,
            _ => false,
        }
    }
}
