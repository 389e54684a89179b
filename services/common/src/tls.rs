//! TLS for vigil's gRPC listeners.
//!
//! - [`ServerTls`]: the server certificate, the client CA bundle and an
//!   optional CRL, loaded fail-closed and **reloaded when a file changes**:
//!   new handshakes use the new material, open connections keep working,
//!   and every open connection whose certificate the new material no longer
//!   accepts (revoked, CA removed, expired) is **cut** within one reload tick.
//! - [`incoming`]: the accept loop: IP allowlist before any TLS byte, the
//!   handshake in its own task with a timeout, and connections handed to
//!   tonic already tagged with the peer's [`PeerInfo`].
//!
//! A handshake is refused for: no certificate, an untrusted chain, an
//! expired or not-yet-valid certificate, one without the clientAuth EKU, a
//! CA certificate as the leaf, a revoked one, and a certificate that does not
//! carry exactly one URI SAN (the identity). TLS 1.2 and 1.3 only.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::UnixTime;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;

use crate::config::{Allowlist, ServerTlsFiles};
use crate::identity::{IdentityError, PeerInfo, TrustDomain};

/// A client that connects and does not finish its handshake in this time is
/// dropped, so half-open connections cannot pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often open connections are re-verified when no file changed (for
/// certificates that expire while connected).
pub const EXPIRY_RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("no certificate in {0}")]
    NoCertificate(String),
    #[error("invalid TLS material: {0}")]
    Invalid(String),
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.display().to_string()));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| read_error(path, e))
}

/// Every CRL in a PEM file (one per CA of the bundle).
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| read_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(path, e))
}

/// WebPKI client verification (chain, validity, clientAuth EKU, not a CA,
/// CRL), plus vigil's own rule: exactly one URI SAN.
#[derive(Debug)]
struct IdentityVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for IdentityVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match crate::identity::single_uri(end_entity) {
            Err(
                e
                @ (IdentityError::NoUri | IdentityError::SeveralUris | IdentityError::Unparseable),
            ) => Err(rustls::Error::General(e.to_string())),
            // A well-formed but unrecognised identity is refused per call
            // (UNAUTHENTICATED), where the caller can be told why.
            _ => Ok(verified),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One loaded set of TLS material.
struct Material {
    config: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

fn build_material(files: &ServerTlsFiles) -> Result<Material, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in load_certs(&files.client_ca)? {
        roots
            .add(ca)
            .map_err(|e| TlsError::Invalid(format!("{}: {e}", files.client_ca.display())))?;
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(crl) = &files.crl {
        builder = builder
            .with_crls(load_crls(crl)?)
            // The CA itself is trusted as configured; its leaves are checked.
            .only_check_end_entity_revocation();
    }
    let webpki = builder
        .build()
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let verifier: Arc<dyn ClientCertVerifier> = Arc::new(IdentityVerifier { inner: webpki });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", files.cert.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Material {
        config: Arc::new(config),
        verifier,
    })
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    /// New material in use; `cut` open connections were closed because it
    /// no longer accepts their certificates.
    Reloaded {
        cut: usize,
    },
}

struct LiveConn {
    chain: Vec<CertificateDer<'static>>,
    remote_addr: SocketAddr,
    cut: CancellationToken,
}

/// A listener's TLS material, reloadable, and the connections it accepted.
pub struct ServerTls {
    files: ServerTlsFiles,
    /// Client identities are parsed in this domain.
    trust_domain: TrustDomain,
    current: RwLock<Arc<Material>>,
    /// The bytes of every file the current material was built from.
    loaded: Mutex<Vec<Vec<u8>>>,
    /// Contents that failed to load, so a broken file is reported once.
    failed: Mutex<Option<Vec<Vec<u8>>>>,
    live: Mutex<HashMap<u64, LiveConn>>,
    next_id: AtomicU64,
    /// Changed files that were refused (each broken version once).
    reload_failures: AtomicU64,
    metrics: TlsMetrics,
}

/// What a listener's TLS reports on `/metrics`.
#[derive(Clone)]
struct TlsMetrics {
    /// Connections refused before or during the handshake, by reason.
    refused: prometheus::IntCounterVec,
    /// `notAfter` of the served certificate.
    expiry: prometheus::Gauge,
    reload_failures: prometheus::IntCounter,
}

impl TlsMetrics {
    fn new() -> Self {
        use crate::metrics::{counter, counter_vec, gauge};
        Self {
            refused: counter_vec(
                "vigil_tls_handshake_failures_total",
                "Connections refused before or during the TLS handshake, by reason (not_allowed, timeout, no_certificate, unknown_ca, expired, not_yet_valid, revoked, bad_identity, bad_certificate, protocol).",
                &["reason"],
            ),
            expiry: gauge(
                "vigil_tls_certificate_expiry_timestamp_seconds",
                "notAfter of the certificate this listener serves, since the Unix epoch.",
            ),
            reload_failures: counter(
                "vigil_tls_reload_failures_total",
                "Changed TLS files that were refused (the running material stayed).",
            ),
        }
    }
}

/// The bounded reason label of a failed handshake.
fn refusal_reason(error: &std::io::Error) -> &'static str {
    use rustls::CertificateError as C;
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::NoCertificatesPresented) => "no_certificate",
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            C::UnknownIssuer | C::BadSignature => "unknown_ca",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not_yet_valid",
            C::Revoked => "revoked",
            _ => "bad_certificate",
        },
        // vigil's own check: exactly one well-formed URI SAN.
        Some(rustls::Error::General(_)) => "bad_identity",
        _ => "protocol",
    }
}

/// `notAfter` of the first certificate in `path`, in Unix seconds.
fn not_after(path: &Path) -> Option<i64> {
    let certs = load_certs(path).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ServerTls {
    /// Loads the material; any problem is an error naming the file.
    pub fn load(files: &ServerTlsFiles, trust_domain: TrustDomain) -> Result<Arc<Self>, TlsError> {
        let snapshot = snapshot(files)?;
        let material = build_material(files)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            trust_domain,
            current: RwLock::new(Arc::new(material)),
            loaded: Mutex::new(snapshot),
            failed: Mutex::new(None),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            metrics: {
                let metrics = TlsMetrics::new();
                metrics
                    .expiry
                    .set(not_after(&files.cert).unwrap_or_default() as f64);
                metrics
            },
        }))
    }

    /// Registers the listener's TLS metrics, and `vigil_tls_connections`.
    pub fn register_metrics(self: &Arc<Self>, metrics: &crate::metrics::Metrics) {
        metrics.register(self.metrics.refused.clone());
        metrics.register(self.metrics.expiry.clone());
        metrics.register(self.metrics.reload_failures.clone());
        let open = crate::metrics::gauge(
            "vigil_tls_connections",
            "Verified client connections open now.",
        );
        metrics.register(open.clone());
        let tls = Arc::downgrade(self);
        metrics.on_scrape(move || {
            if let Some(tls) = tls.upgrade() {
                open.set(tls.live_connections() as f64);
            }
        });
    }

    /// The rustls config new handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.material().config.clone()
    }

    fn material(&self) -> Arc<Material> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Changed TLS files refused since start-up (the running material stayed).
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// Connections accepted and still open.
    pub fn live_connections(&self) -> usize {
        lock(&self.live).len()
    }

    /// Re-reads the files; if any changed, builds new material (a broken
    /// file is an error and the running material stays) and cuts open
    /// connections the new material would refuse.
    pub fn reload_if_changed(&self) -> Result<Reload, TlsError> {
        let snapshot = snapshot(&self.files)?;
        if *lock(&self.loaded) == snapshot || lock(&self.failed).as_ref() == Some(&snapshot) {
            // Nothing new (a broken version was reported when it appeared).
            return Ok(Reload::Unchanged);
        }
        let material = match build_material(&self.files) {
            Ok(m) => m,
            Err(e) => {
                *lock(&self.failed) = Some(snapshot);
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                self.metrics.reload_failures.inc();
                return Err(e);
            }
        };
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(material);
        *lock(&self.loaded) = snapshot;
        *lock(&self.failed) = None;
        self.metrics
            .expiry
            .set(not_after(&self.files.cert).unwrap_or_default() as f64);
        Ok(Reload::Reloaded {
            cut: self.recheck_live(),
        })
    }

    /// Verifies every open connection's certificate against the current
    /// material and cuts those that fail; returns how many were cut.
    pub fn recheck_live(&self) -> usize {
        let verifier = self.material().verifier.clone();
        let now = UnixTime::now();
        let mut cut = 0;
        for (id, conn) in lock(&self.live).iter() {
            let Some((leaf, intermediates)) = conn.chain.split_first() else {
                continue;
            };
            if let Err(error) = verifier.verify_client_cert(leaf, intermediates, now) {
                tracing::warn!(connection = id, remote_addr = %conn.remote_addr, %error,
                    "certificate no longer accepted; cutting the connection");
                conn.cut.cancel();
                cut += 1;
            }
        }
        cut
    }

    /// Reloads every `interval` until `shutdown`, logging what happened.
    /// Open connections are re-verified on every reload, and every
    /// [`EXPIRY_RECHECK`] otherwise, so a certificate that expires while
    /// connected is cut too (without verifying every chain every second).
    pub fn watch(self: &Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_check = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let Some(tls) = tls.upgrade() else { break };
                match tls.reload_if_changed() {
                    Ok(Reload::Unchanged) => {
                        if last_check.elapsed() >= EXPIRY_RECHECK {
                            tls.recheck_live();
                            last_check = tokio::time::Instant::now();
                        }
                    }
                    Ok(Reload::Reloaded { cut }) => {
                        tracing::info!(cut, "tls material reloaded");
                        last_check = tokio::time::Instant::now();
                    }
                    Err(error) => {
                        tracing::error!(%error, "tls material not reloaded; keeping the running one");
                    }
                }
            }
        });
    }

    fn register(
        self: &Arc<Self>,
        chain: Vec<CertificateDer<'static>>,
        remote_addr: SocketAddr,
    ) -> (LiveGuard, CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cut = CancellationToken::new();
        lock(&self.live).insert(
            id,
            LiveConn {
                chain,
                remote_addr,
                cut: cut.clone(),
            },
        );
        (
            LiveGuard {
                tls: Arc::downgrade(self),
                id,
            },
            cut,
        )
    }
}

fn snapshot(files: &ServerTlsFiles) -> Result<Vec<Vec<u8>>, TlsError> {
    let mut paths: Vec<&PathBuf> = vec![&files.cert, &files.key, &files.client_ca];
    paths.extend(files.crl.as_ref());
    paths
        .into_iter()
        .map(|p| std::fs::read(p).map_err(|e| read_error(p, e)))
        .collect()
}

/// Removes a connection from the live set when it is dropped.
struct LiveGuard {
    tls: std::sync::Weak<ServerTls>,
    id: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if let Some(tls) = self.tls.upgrade() {
            lock(&tls.live).remove(&self.id);
        }
    }
}

/// A TLS connection whose client certificate has been verified; reads and
/// writes fail once the connection is cut (see [`ServerTls::recheck_live`]).
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
    cut: CancellationToken,
    cut_wait: Pin<Box<WaitForCancellationFutureOwned>>,
    _guard: LiveGuard,
}

impl TlsConn {
    fn check_cut(&mut self, cx: &mut Context<'_>) -> Result<(), std::io::Error> {
        if self.cut.is_cancelled() || self.cut_wait.as_mut().poll(cx).is_ready() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "client certificate no longer accepted",
            ));
        }
        Ok(())
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Err(e) = self.check_cut(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Err(e) = self.check_cut(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if let Err(e) = self.check_cut(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections on `listener` until `shutdown`: a peer outside
/// `allow` is closed before any TLS byte; each handshake runs in its own
/// task (a slow client never blocks others) with the material current at
/// that moment; verified connections are yielded for `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    allow: Arc<Allowlist>,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<TlsConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote_addr) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if !allow.permits(remote_addr.ip()) {
                tls.metrics
                    .refused
                    .with_label_values(&["not_allowed"])
                    .inc();
                tracing::warn!(%remote_addr, "connection refused: address not in the allowlist");
                drop(tcp);
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.config());
            let tls = tls.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let chain: Vec<CertificateDer<'static>> = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                            .unwrap_or_default();
                        let identity = match chain.first() {
                            Some(leaf) => {
                                crate::identity::from_certificate(leaf, &tls.trust_domain)
                            }
                            None => Err(IdentityError::NoCertificate),
                        };
                        let info = PeerInfo {
                            remote_addr: Some(remote_addr),
                            identity,
                        };
                        let (guard, cut) = tls.register(chain, remote_addr);
                        let _ = tx
                            .send(Ok(TlsConn {
                                inner: stream,
                                info,
                                cut_wait: Box::pin(cut.clone().cancelled_owned()),
                                cut,
                                _guard: guard,
                            }))
                            .await;
                    }
                    Ok(Err(error)) => {
                        let reason = refusal_reason(&error);
                        tls.metrics.refused.with_label_values(&[reason]).inc();
                        tracing::info!(%remote_addr, %error, reason, "tls handshake refused");
                    }
                    Err(_) => {
                        tls.metrics.refused.with_label_values(&["timeout"]).inc();
                        tracing::info!(%remote_addr, "tls handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_file_is_refused_once_and_the_fix_is_picked_up()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let pki = vigil_certs::generate(dir.path(), &vigil_certs::Options::default())?;
        let server = pki.server("gateway");
        let files = ServerTlsFiles {
            cert: server.cert.clone(),
            key: server.key.clone(),
            client_ca: pki.ca(),
            crl: Some(pki.crl()),
        };
        let tls = ServerTls::load(&files, TrustDomain::default())?;
        assert_eq!(tls.reload_if_changed()?, Reload::Unchanged);
        let good = std::fs::read(&server.cert)?;
        std::fs::write(&server.cert, b"-----BEGIN CERTIFICATE-----\nbroken\n")?;
        assert!(tls.reload_if_changed().is_err(), "broken file accepted");
        assert_eq!(
            tls.reload_if_changed()?,
            Reload::Unchanged,
            "reported twice"
        );
        std::fs::write(&server.cert, &good)?;
        // The good content again is what is loaded: nothing to do.
        assert_eq!(tls.reload_if_changed()?, Reload::Unchanged);
        vigil_certs::revoke(dir.path(), &pki.device("acme", "cam-01").cert)?;
        assert_eq!(tls.reload_if_changed()?, Reload::Reloaded { cut: 0 });
        Ok(())
    }
}
