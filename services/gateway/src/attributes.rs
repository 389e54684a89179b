//! Which OCSF attributes an event carries: the presence test the schema's
//! requirements are checked with. One arm per protobuf field, by its OCSF
//! name; an attribute vigil's contract does not carry is never present.

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

fn text(s: &str) -> bool {
    !s.is_empty()
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

    /// Whether the attribute `name` is present (an object, a non-empty
    /// string or array, a non-zero number; `*_id` enums count when set,
    /// since 0 is OCSF's "Unknown").
    pub fn has(self, name: &str) -> bool {
        if self.child(name).is_some() || !self.children(name).is_empty() {
            return true;
        }
        match (self, name) {
            (Node::Event(e), "class_uid") => e.class_uid != 0,
            (Node::Event(e), "category_uid") => e.category_uid != 0,
            (Node::Event(_), "activity_id") => true,
            (Node::Event(e), "type_uid") => e.type_uid != 0,
            (Node::Event(_), "severity_id" | "status_id") => true,
            (Node::Event(e), "time") => e.time != 0,
            (Node::Event(e), "message") => text(&e.message),
            (Node::Event(e), "privileges") => !e.privileges.is_empty(),
            (Node::Event(e), "status_detail") => text(&e.status_detail),
            (Node::Event(e), "unmapped") => !e.unmapped.is_empty(),
            (Node::Metadata(m), "uid") => text(&m.uid),
            (Node::Metadata(m), "version") => text(&m.version),
            (Node::Metadata(m), "tenant_uid") => text(&m.tenant_uid),
            (Node::Metadata(m), "logged_time") => m.logged_time != 0,
            (Node::Metadata(m), "original_time") => text(&m.original_time),
            (Node::Metadata(m), "sequence") => m.sequence != 0,
            (Node::Metadata(m), "profiles") => !m.profiles.is_empty(),
            (Node::Product(p), "name") => text(&p.name),
            (Node::Product(p), "vendor_name") => text(&p.vendor_name),
            (Node::Product(p), "version") => text(&p.version),
            (Node::Product(p), "uid") => text(&p.uid),
            (Node::Device(d), "uid") => text(&d.uid),
            (Node::Device(d), "name") => text(&d.name),
            (Node::Device(d), "hostname") => text(&d.hostname),
            (Node::Device(d), "ip") => text(&d.ip),
            (Node::Device(_), "type_id") => true,
            (Node::User(u), "name") => text(&u.name),
            (Node::User(u), "uid") => text(&u.uid),
            (Node::User(u), "domain") => text(&u.domain),
            (Node::User(_), "type_id") => true,
            (Node::Endpoint(p), "ip") => text(&p.ip),
            (Node::Endpoint(p), "port") => p.port != 0,
            (Node::Endpoint(p), "hostname") => text(&p.hostname),
            (Node::Endpoint(p), "uid") => text(&p.uid),
            (Node::Process(p), "pid") => p.pid != 0,
            (Node::Process(p), "name") => text(&p.name),
            (Node::Process(p), "cmd_line") => text(&p.cmd_line),
            (Node::Process(p), "uid") => text(&p.uid),
            (Node::File(f), "name") => text(&f.name),
            (Node::File(f), "path") => text(&f.path),
            (Node::File(_), "type_id") => true,
            (Node::File(f), "size") => f.size != 0,
            (Node::File(f), "uid") => text(&f.uid),
            (Node::Query(q), "hostname") => text(&q.hostname),
            (Node::Query(q), "type") => text(&q.r#type),
            (Node::Query(q), "class") => text(&q.class),
            (Node::Http(h), "http_method") => text(&h.http_method),
            (Node::Http(h), "user_agent") => text(&h.user_agent),
            (Node::Url(u), "url_string") => text(&u.url_string),
            (Node::Url(u), "hostname") => text(&u.hostname),
            (Node::Url(u), "path") => text(&u.path),
            (Node::Url(u), "port") => u.port != 0,
            (Node::Service(s), "name") => text(&s.name),
            (Node::Service(s), "uid") => text(&s.uid),
            (Node::Observable(o), "name") => text(&o.name),
            (Node::Observable(_), "type_id") => true,
            (Node::Observable(o), "value") => text(&o.value),
            _ => false,
        }
    }
}
