//! A minimal Prometheus endpoint: `GET /metrics` on its own plaintext port
//! answers with the text exposition format rendered by the service. (One
//! page of HTTP/1.1 needs no framework; the `prometheus` crate can replace
//! `render` when services grow histograms.)

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One sample: name, help, type (`counter`/`gauge`) and value.
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: &'static str,
    pub value: f64,
}

/// Renders samples in the Prometheus text format.
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    for s in samples {
        out.push_str(&format!(
            "# HELP {} {}\n# TYPE {} {}\n{} {}\n",
            s.name, s.help, s.name, s.kind, s.name, s.value
        ));
    }
    out
}

/// Serves `render()` at any path until `shutdown`.
pub async fn serve<F>(listener: TcpListener, shutdown: CancellationToken, render: F)
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let render = std::sync::Arc::new(render);
    loop {
        let (mut stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut head = [0u8; 1024];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut head))
                .await;
            let body = render();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
