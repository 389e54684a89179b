//! Attack scenarios with ground truth: background traffic that never trips
//! a rule, the three attacks the default rules must find (brute force,
//! credential compromise, port scan) twice per tenant (once inside a
//! window, once straddling a window boundary), and near-misses they must
//! not (4 failures, also across a boundary; 19 ports; a success before the
//! failures). Used by
//! `device-sim scenario` and by the correlator's tests.

use rand::{Rng, SeedableRng};
use serde::Serialize;
use vigil_proto::event::v1::{NetworkEndpoint, SecurityEvent, Service, SeverityId, StatusId, User};

use crate::events;

/// One injected pattern and whether a finding must result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Truth {
    pub tenant: String,
    pub rule_id: &'static str,
    /// The group-key field and value the finding carries.
    pub key_field: &'static str,
    pub key_value: String,
    pub expect_finding: bool,
    pub label: &'static str,
}

/// Events to send (as `device` of `tenant`) and what must be found.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    pub events: Vec<(String, String, SecurityEvent)>,
    pub truth: Vec<Truth>,
}

impl Scenario {
    /// The findings that must exist: (tenant, rule, key value).
    pub fn expected(&self) -> std::collections::BTreeSet<(String, String, String)> {
        self.truth
            .iter()
            .filter(|t| t.expect_finding)
            .map(|t| (t.tenant.clone(), t.rule_id.to_owned(), t.key_value.clone()))
            .collect()
    }
}

fn login(time: i64, user: &str, ip: &str, success: bool) -> SecurityEvent {
    let (severity, status, message) = if success {
        (
            SeverityId::Informational,
            StatusId::Success,
            format!("user {user} logged in from {ip}"),
        )
    } else {
        (
            SeverityId::Medium,
            StatusId::Failure,
            format!("failed password for {user} from {ip}"),
        )
    };
    let mut e = events::base(3002, 1, severity, time, message);
    e.status_id = status as i32;
    e.user = Some(User {
        name: user.into(),
        type_id: 1,
        ..Default::default()
    });
    e.service = Some(Service {
        name: "sshd".into(),
        ..Default::default()
    });
    e.src_endpoint = Some(NetworkEndpoint {
        ip: ip.into(),
        ..Default::default()
    });
    e
}

fn connection(time: i64, ip: &str, port: i32) -> SecurityEvent {
    let mut e = events::base(
        4001,
        6,
        SeverityId::Low,
        time,
        format!("connection from {ip} to port {port}"),
    );
    e.src_endpoint = Some(NetworkEndpoint {
        ip: ip.into(),
        port: 40_000,
        ..Default::default()
    });
    e.dst_endpoint = Some(NetworkEndpoint {
        ip: "10.200.0.1".into(),
        port,
        ..Default::default()
    });
    e
}

/// A scenario for `devices` (one `(tenant, device)` per tenant is used for
/// that tenant's attacks), starting at `start` (aligned down to 10 minutes
/// so every pattern sits inside one window of its rule) and ending at
/// `end`, with `background` benign events per tenant.
pub fn generate(
    devices: &[(String, String)],
    start: i64,
    end: i64,
    background: usize,
    seed: u64,
) -> Scenario {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let base = start - start.rem_euclid(600_000);
    let mut s = Scenario::default();
    let mut tenants: Vec<&(String, String)> = Vec::new();
    for d in devices {
        if !tenants.iter().any(|t| t.0 == d.0) {
            tenants.push(d);
        }
    }
    for (n, (tenant, device)) in tenants.iter().enumerate() {
        let mut push = |e: SecurityEvent| s.events.push((tenant.clone(), device.clone(), e));
        let n = n as u32;
        // Brute force: 6 failures from one source within a minute.
        let bf_ip = format!("203.0.113.{}", 10 + n);
        for i in 0..6 {
            push(login(
                base + 30_000 + i * 5_000,
                &format!("guess{i}"),
                &bf_ip,
                false,
            ));
        }
        // Credential compromise: 5 failures (each from another source, so
        // no brute force) then a success, for one user.
        let victim = format!("victim{n}");
        for i in 0..5 {
            push(login(
                base + 60_000 + i * 2_000,
                &victim,
                &format!("198.51.100.{}", 20 + i + 10 * i64::from(n)),
                false,
            ));
        }
        push(login(base + 75_000, &victim, "198.51.100.99", true));
        // Port scan: 25 ports from one source within 30 s.
        let scan_ip = format!("203.0.113.{}", 100 + n);
        for p in 0..25 {
            push(connection(
                base + 120_000 + i64::from(p) * 1_000,
                &scan_ip,
                1_000 + p,
            ));
        }
        // The same three attacks again, each straddling a boundary of its
        // rule's window (5 minutes, 10 minutes, 1 minute past `base`): a
        // detector with fixed windows would miss every one.
        let bf_across = format!("203.0.113.{}", 30 + n);
        for i in 0..6 {
            push(login(
                base + 297_000 + i * 1_500,
                &format!("across{i}"),
                &bf_across,
                false,
            ));
        }
        let victim_across = format!("victim-across{n}");
        for i in 0..5 {
            push(login(
                base + 596_000 + i * 1_000,
                &victim_across,
                &format!("198.51.100.{}", 120 + i + 10 * i64::from(n)),
                false,
            ));
        }
        push(login(
            base + 601_000,
            &victim_across,
            "198.51.100.199",
            true,
        ));
        let scan_across = format!("203.0.113.{}", 130 + n);
        for p in 0..25 {
            push(connection(
                base + 50_000 + i64::from(p) * 500,
                &scan_across,
                3_000 + p,
            ));
        }
        // Near-misses.
        let nm_ip = format!("203.0.113.{}", 200 + n);
        for i in 0..4 {
            push(login(
                base + 190_000 + i * 1_000,
                &format!("typo{i}"),
                &nm_ip,
                false,
            ));
        }
        let nm_scan = format!("203.0.113.{}", 220 + n);
        for p in 0..19 {
            push(connection(
                base + 200_000 + i64::from(p) * 1_000,
                &nm_scan,
                2_000 + p,
            ));
        }
        // A near-miss across a boundary too: 4 failures around base + 5 min.
        let nm_across = format!("203.0.113.{}", 240 + n);
        for i in 0..4 {
            push(login(
                base + 298_000 + i * 1_000,
                &format!("typo-across{i}"),
                &nm_across,
                false,
            ));
        }
        let early = format!("early{n}");
        push(login(base + 300_000, &early, "192.0.2.50", true));
        for i in 0..5 {
            push(login(
                base + 310_000 + i * 1_000,
                &early,
                &format!("192.0.2.{}", 60 + i),
                false,
            ));
        }
        // Background: benign traffic over the whole span; logins are
        // unique per user and source, so they can never add up.
        for b in 0..background {
            let time = rng.random_range(base..end.max(base + 1));
            let e = match rng.random_range(0..4) {
                0 => login(
                    time,
                    &format!("bg{n}-{b}"),
                    &format!("10.{}.{}.{}", n, b / 250 % 250, b % 250 + 1),
                    rng.random_bool(0.8),
                ),
                1 => {
                    let mut e = events::sample(events::Kind::Dns, &mut rng, time);
                    e.src_endpoint = None;
                    e
                }
                2 => {
                    let mut e = events::sample(events::Kind::Process, &mut rng, time);
                    e.src_endpoint = None;
                    e
                }
                _ => connection(
                    time,
                    &format!("10.{}.{}.{}", 100 + n, b / 250 % 250, b % 250 + 1),
                    443,
                ),
            };
            push(e);
        }
        // A last event at the end, so the watermark passes every window.
        push(events::sample(events::Kind::Dns, &mut rng, end));
        let truth = |rule_id, key_field, key_value: &str, expect_finding, label| Truth {
            tenant: tenant.clone(),
            rule_id,
            key_field,
            key_value: key_value.to_owned(),
            expect_finding,
            label,
        };
        s.truth.push(truth(
            "brute-force",
            "src_endpoint.ip",
            &bf_ip,
            true,
            "6 failed logins from one source",
        ));
        s.truth.push(truth(
            "credential-compromise",
            "user.name",
            &victim,
            true,
            "5 failures then a success",
        ));
        s.truth.push(truth(
            "port-scan",
            "src_endpoint.ip",
            &scan_ip,
            true,
            "25 ports from one source",
        ));
        s.truth.push(truth(
            "brute-force",
            "src_endpoint.ip",
            &bf_across,
            true,
            "6 failed logins from one source, across a window boundary",
        ));
        s.truth.push(truth(
            "credential-compromise",
            "user.name",
            &victim_across,
            true,
            "5 failures then a success, across a window boundary",
        ));
        s.truth.push(truth(
            "port-scan",
            "src_endpoint.ip",
            &scan_across,
            true,
            "25 ports from one source, across a window boundary",
        ));
        s.truth.push(truth(
            "brute-force",
            "src_endpoint.ip",
            &nm_across,
            false,
            "near-miss: 4 failed logins across a window boundary",
        ));
        s.truth.push(truth(
            "brute-force",
            "src_endpoint.ip",
            &nm_ip,
            false,
            "near-miss: 4 failed logins",
        ));
        s.truth.push(truth(
            "port-scan",
            "src_endpoint.ip",
            &nm_scan,
            false,
            "near-miss: 19 ports",
        ));
        s.truth.push(truth(
            "credential-compromise",
            "user.name",
            &early,
            false,
            "near-miss: success before failures",
        ));
    }
    s.events.sort_by_key(|(_, _, e)| e.time);
    s
}
