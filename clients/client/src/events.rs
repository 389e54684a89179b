//! Builders for realistic OCSF events, as devices send them.

use rand::Rng;
use rand::seq::IndexedRandom;
use vigil_proto::event::v1::{
    Actor, Metadata, NetworkEndpoint, Product, SecurityEvent, SeverityId, StatusId, User,
};

/// OCSF schema version vigil's builders follow.
pub const OCSF_VERSION: &str = "1.5.0";

/// A new idempotency key.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The kinds of event a simulated device emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    LoginSuccess,
    LoginFailure,
    Process,
    Network,
    Dns,
    File,
}

impl Kind {
    pub fn class_uid(self) -> i32 {
        match self {
            Kind::LoginSuccess | Kind::LoginFailure => 3002,
            Kind::Process => 1007,
            Kind::Network => 4001,
            Kind::Dns => 4003,
            Kind::File => 1001,
        }
    }

    /// Parses `auth-success`, `auth-failure`, `process`, `network`, `dns`, `file`.
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "auth-success" | "login-success" => Kind::LoginSuccess,
            "auth-failure" | "login-failure" => Kind::LoginFailure,
            "process" => Kind::Process,
            "network" => Kind::Network,
            "dns" => Kind::Dns,
            "file" => Kind::File,
            _ => return None,
        })
    }
}

/// An event with the fields every event needs; the gateway fills in
/// tenant, device, category and type.
pub fn base(
    class_uid: i32,
    activity_id: i32,
    severity: SeverityId,
    time_ms: i64,
    message: impl Into<String>,
) -> SecurityEvent {
    SecurityEvent {
        event_id: new_event_id(),
        class_uid,
        activity_id,
        severity_id: severity as i32,
        time: time_ms,
        message: message.into(),
        metadata: Some(Metadata {
            version: OCSF_VERSION.into(),
            product: Some(Product {
                name: "vigil-device-sim".into(),
                vendor_name: "vigil".into(),
                version: env!("CARGO_PKG_VERSION").into(),
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

/// A plausible event of `kind` at `time_ms`; severities follow what such
/// an event usually is (most informational, a few high or critical).
pub fn sample(kind: Kind, rng: &mut impl Rng, time_ms: i64) -> SecurityEvent {
    // Mostly one of thousands of ordinary accounts, sometimes a well-known
    // one: background traffic should rarely add up to an attack by chance.
    let user = if rng.random_bool(0.05) {
        pick(rng, USERS).to_owned()
    } else {
        format!("user{:04}", rng.random_range(0..5000))
    };
    let user = user.as_str();
    let src = ip(rng);
    let mut event = match kind {
        Kind::LoginSuccess => {
            let mut e = base(
                3002,
                1,
                SeverityId::Informational,
                time_ms,
                format!("user {user} logged in"),
            );
            e.status_id = StatusId::Success as i32;
            e
        }
        Kind::LoginFailure => {
            let severity = if user == "root" || user == "admin" {
                SeverityId::High
            } else {
                SeverityId::Medium
            };
            let mut e = base(
                3002,
                1,
                severity,
                time_ms,
                format!("failed password for {user} from {src}"),
            );
            e.status_id = StatusId::Failure as i32;
            e
        }
        Kind::Process => {
            let process = pick(rng, PROCESSES);
            let severity = if process.starts_with("/tmp/") {
                SeverityId::Critical
            } else {
                SeverityId::Informational
            };
            let mut e = base(
                1007,
                1,
                severity,
                time_ms,
                format!("process {process} launched by {user}"),
            );
            e.actor = Some(Actor {
                user: None,
                process_name: process.into(),
            });
            e
        }
        Kind::Network => {
            let port = *[22u32, 80, 443, 3389, 4444, 8080]
                .choose(rng)
                .unwrap_or(&443);
            let severity = if port == 4444 || port == 3389 {
                SeverityId::High
            } else {
                SeverityId::Low
            };
            let mut e = base(
                4001,
                6,
                severity,
                time_ms,
                format!("connection from {src} to port {port}"),
            );
            e.dst_endpoint = Some(NetworkEndpoint {
                ip: ip(rng),
                port,
                hostname: String::new(),
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
            let mut e = base(4003, 2, severity, time_ms, format!("dns query {domain}"));
            e.unmapped.insert("query.hostname".into(), domain.into());
            e
        }
        Kind::File => {
            let file = pick(rng, FILES);
            let severity = if file.contains("shadow") || file.contains("authorized_keys") {
                SeverityId::Critical
            } else {
                SeverityId::Low
            };
            let mut e = base(
                1001,
                2,
                severity,
                time_ms,
                format!("file {file} read by {user}"),
            );
            e.unmapped.insert("file.path".into(), file.into());
            e
        }
    };
    event.actor.get_or_insert_with(Actor::default).user = Some(User {
        name: user.into(),
        ..Default::default()
    });
    event.src_endpoint = Some(NetworkEndpoint {
        ip: src,
        port: rng.random_range(1024..65535),
        hostname: String::new(),
    });
    event
}

/// A kind drawn from a realistic mix: mostly logins, processes and network.
pub fn random_kind(rng: &mut impl Rng) -> Kind {
    match rng.random_range(0..100) {
        0..25 => Kind::LoginSuccess,
        25..37 => Kind::LoginFailure,
        37..57 => Kind::Process,
        57..77 => Kind::Network,
        77..92 => Kind::Dns,
        _ => Kind::File,
    }
}
