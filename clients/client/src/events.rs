//! Builders for realistic OCSF events, as devices send them: every
//! supported class with the objects the class requires (the user of an
//! Authentication, the process and actor of a Process Activity, the file of
//! a File System Activity, the query of a DNS Activity...).

use rand::Rng;
use rand::seq::IndexedRandom;
use vigil_proto::event::v1::{
    Actor, Device, DnsQuery, File, HttpRequest, Metadata, NetworkEndpoint, Observable, Process,
    Product, SecurityEvent, Service, SeverityId, StatusId, Url, User,
};

/// OCSF schema version vigil's builders follow: the one vigil targets.
pub const OCSF_VERSION: &str = vigil_ocsf::VERSION;

/// A new idempotency key (`metadata.uid`).
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The kinds of event a simulated device emits, one or more per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    LoginSuccess,
    LoginFailure,
    Authorize,
    Process,
    Network,
    Http,
    Dns,
    Ssh,
    File,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::LoginSuccess,
        Kind::LoginFailure,
        Kind::Authorize,
        Kind::Process,
        Kind::Network,
        Kind::Http,
        Kind::Dns,
        Kind::Ssh,
        Kind::File,
    ];

    pub fn class_uid(self) -> i32 {
        match self {
            Kind::LoginSuccess | Kind::LoginFailure => 3002,
            Kind::Authorize => 3003,
            Kind::Process => 1007,
            Kind::Network => 4001,
            Kind::Http => 4002,
            Kind::Dns => 4003,
            Kind::Ssh => 4007,
            Kind::File => 1001,
        }
    }

    /// Parses `auth-success`, `auth-failure`, `authorize`, `process`,
    /// `network`, `http`, `dns`, `ssh`, `file`.
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "auth-success" | "login-success" => Kind::LoginSuccess,
            "auth-failure" | "login-failure" => Kind::LoginFailure,
            "authorize" => Kind::Authorize,
            "process" => Kind::Process,
            "network" => Kind::Network,
            "http" => Kind::Http,
            "dns" => Kind::Dns,
            "ssh" => Kind::Ssh,
            "file" => Kind::File,
            _ => return None,
        })
    }
}

/// An event with the fields every event needs; the gateway fills in
/// `metadata.tenant_uid`, `metadata.logged_time`, `device.uid`, category
/// and type.
pub fn base(
    class_uid: i32,
    activity_id: i32,
    severity: SeverityId,
    time_ms: i64,
    message: impl Into<String>,
) -> SecurityEvent {
    SecurityEvent {
        class_uid,
        activity_id,
        severity_id: severity as i32,
        time: time_ms,
        message: message.into(),
        metadata: Some(Metadata {
            uid: new_event_id(),
            version: OCSF_VERSION.into(),
            product: Some(Product {
                name: "vigil-device-sim".into(),
                vendor_name: "vigil".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

const USERS: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "dave",
    "root",
    "admin",
    "svc-backup",
];
const PROCESSES: &[&str] = &[
    "/usr/bin/curl",
    "/bin/bash",
    "/usr/sbin/sshd",
    "/tmp/.x/miner",
    "/usr/bin/python3",
];
const DOMAINS: &[&str] = &[
    "updates.example.com",
    "api.example.net",
    "x7f3k.badsite.top",
    "cdn.example.org",
];
const FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/shadow",
    "/var/log/auth.log",
    "/home/alice/.ssh/authorized_keys",
];

fn ip(rng: &mut impl Rng) -> String {
    if rng.random_bool(0.7) {
        format!(
            "10.{}.{}.{}",
            rng.random_range(0..4),
            rng.random_range(0..255),
            rng.random_range(1..255)
        )
    } else {
        format!(
            "{}.{}.{}.{}",
            rng.random_range(1..223),
            rng.random_range(0..255),
            rng.random_range(0..255),
            rng.random_range(1..255)
        )
    }
}

fn pick<'a>(rng: &mut impl Rng, items: &'a [&'a str]) -> &'a str {
    items.choose(rng).copied().unwrap_or_default()
}

fn user(name: &str) -> User {
    User {
        name: name.into(),
        // OCSF user type_id 1: User.
        type_id: 1,
        ..Default::default()
    }
}

/// The final path component, as OCSF `name` attributes want it.
fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn endpoint(ip: String, port: i32) -> NetworkEndpoint {
    NetworkEndpoint {
        ip,
        port,
        ..Default::default()
    }
}

/// A plausible event of `kind` at `time_ms`; severities follow what such
/// an event usually is (most informational, a few high or critical).
pub fn sample(kind: Kind, rng: &mut impl Rng, time_ms: i64) -> SecurityEvent {
    // Mostly one of thousands of ordinary accounts, sometimes a well-known
    // one: background traffic should rarely add up to an attack by chance.
    let name = if rng.random_bool(0.05) {
        pick(rng, USERS).to_owned()
    } else {
        format!("user{:04}", rng.random_range(0..5000))
    };
    let name = name.as_str();
    let src = ip(rng);
    let src_port = rng.random_range(1024..65535);
    let mut event = match kind {
        Kind::LoginSuccess | Kind::LoginFailure => {
            let success = kind == Kind::LoginSuccess;
            let severity = match (success, name) {
                (true, _) => SeverityId::Informational,
                (false, "root" | "admin") => SeverityId::High,
                (false, _) => SeverityId::Medium,
            };
            let message = if success {
                format!("user {name} logged in")
            } else {
                format!("failed password for {name} from {src}")
            };
            // Authentication 1: Logon.
            let mut e = base(3002, 1, severity, time_ms, message);
            e.status_id = if success {
                StatusId::Success
            } else {
                StatusId::Failure
            } as i32;
            e.user = Some(user(name));
            e.service = Some(Service {
                name: "sshd".into(),
                ..Default::default()
            });
            e.dst_endpoint = Some(endpoint(ip(rng), 22));
            e
        }
        Kind::Authorize => {
            // Authorize Session 1: Assign Privileges.
            let mut e = base(
                3003,
                1,
                SeverityId::Low,
                time_ms,
                format!("special privileges assigned to {name}"),
            );
            e.user = Some(user(name));
            e.privileges = vec!["SeDebugPrivilege".into(), "SeBackupPrivilege".into()];
            e
        }
        Kind::Process => {
            let path = pick(rng, PROCESSES);
            let severity = if path.starts_with("/tmp/") {
                SeverityId::Critical
            } else {
                SeverityId::Informational
            };
            // Process Activity 1: Launch.
            let mut e = base(
                1007,
                1,
                severity,
                time_ms,
                format!("process {path} launched by {name}"),
            );
            e.process = Some(Process {
                pid: rng.random_range(300..65_000),
                name: basename(path).into(),
                cmd_line: path.into(),
                file: Some(File {
                    name: basename(path).into(),
                    path: path.into(),
                    type_id: 1,
                    ..Default::default()
                }),
                ..Default::default()
            });
            e.actor = Some(Actor {
                user: Some(user(name)),
                process: Some(Process {
                    pid: rng.random_range(1..300),
                    name: "bash".into(),
                    ..Default::default()
                }),
            });
            e
        }
        Kind::Network | Kind::Ssh => {
            let port = *[22, 80, 443, 3389, 4444, 8080].choose(rng).unwrap_or(&443);
            let (class, port) = if kind == Kind::Ssh {
                (4007, 22)
            } else {
                (4001, port)
            };
            let severity = if port == 4444 || port == 3389 {
                SeverityId::High
            } else {
                SeverityId::Low
            };
            // Network and SSH Activity 6: Traffic.
            let mut e = base(
                class,
                6,
                severity,
                time_ms,
                format!("connection from {src} to port {port}"),
            );
            e.dst_endpoint = Some(endpoint(ip(rng), port));
            e
        }
        Kind::Http => {
            let host = pick(rng, DOMAINS);
            let severity = if host.ends_with(".top") {
                SeverityId::High
            } else {
                SeverityId::Informational
            };
            // HTTP Activity 3: Get.
            let mut e = base(4002, 3, severity, time_ms, format!("GET https://{host}/"));
            e.http_request = Some(HttpRequest {
                http_method: "GET".into(),
                url: Some(Url {
                    url_string: format!("https://{host}/"),
                    hostname: host.into(),
                    path: "/".into(),
                    port: 443,
                }),
                user_agent: "curl/8.5.0".into(),
            });
            e.dst_endpoint = Some(NetworkEndpoint {
                hostname: host.into(),
                port: 443,
                ..Default::default()
            });
            e
        }
        Kind::Dns => {
            let domain = pick(rng, DOMAINS);
            let severity = if domain.ends_with(".top") {
                SeverityId::High
            } else {
                SeverityId::Informational
            };
            // DNS Activity 1: Query.
            let mut e = base(4003, 1, severity, time_ms, format!("dns query {domain}"));
            e.query = Some(DnsQuery {
                hostname: domain.into(),
                r#type: "A".into(),
                class: "IN".into(),
            });
            e.observables.push(Observable {
                name: "query.hostname".into(),
                // OCSF observable type_id 1: Hostname.
                type_id: 1,
                value: domain.into(),
            });
            e.dst_endpoint = Some(endpoint(ip(rng), 53));
            e
        }
        Kind::File => {
            let path = pick(rng, FILES);
            let severity = if path.contains("shadow") || path.contains("authorized_keys") {
                SeverityId::Critical
            } else {
                SeverityId::Low
            };
            // File System Activity 2: Read.
            let mut e = base(
                1001,
                2,
                severity,
                time_ms,
                format!("file {path} read by {name}"),
            );
            e.file = Some(File {
                name: basename(path).into(),
                path: path.into(),
                // OCSF file type_id 1: Regular File.
                type_id: 1,
                ..Default::default()
            });
            e.actor = Some(Actor {
                user: Some(user(name)),
                process: None,
            });
            e
        }
    };
    // Where it came from, for the classes that have a source (System
    // Activity events happen on the device itself).
    if event.class_uid / 1000 != 1 {
        event.src_endpoint = Some(endpoint(src, src_port));
    }
    // The reporting device; the gateway overwrites its uid from the
    // certificate. OCSF device type_id 1: Server.
    event.device = Some(Device {
        type_id: 1,
        hostname: "localhost".into(),
        ..Default::default()
    });
    event
}

/// A kind drawn from a realistic mix: mostly logins, processes and network.
pub fn random_kind(rng: &mut impl Rng) -> Kind {
    match rng.random_range(0..100) {
        0..22 => Kind::LoginSuccess,
        22..34 => Kind::LoginFailure,
        34..37 => Kind::Authorize,
        37..55 => Kind::Process,
        55..70 => Kind::Network,
        70..76 => Kind::Http,
        76..88 => Kind::Dns,
        88..92 => Kind::Ssh,
        _ => Kind::File,
    }
}
