//! The `serve` command's lifecycle: bind, load models in the background (the server answers
//! liveness meanwhile and readiness once every model is warm), serve, and on SIGTERM/SIGINT stop
//! accepting, drain what was accepted and exit.

use std::future::IntoFuture;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::http;
use crate::metrics::{Metrics, ModelCollector, StorageCollector};
use crate::promql::Engine;
use crate::rules::{self, LocalQuery, QueryFn, RemoteQuery, RuleManager};
use crate::scrape;
use crate::serve::Registry;
use crate::storage::{Storage, StorageOptions};

/// Runs the server until a shutdown signal, then drains. Errors are one line for the terminal.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    // Everything that can be refused is checked before models start loading.
    let targets = scrape::targets(&config.scrape, local).map_err(anyhow::Error::msg)?;
    let groups = rules::load_all(&config.rules.files).map_err(anyhow::Error::msg)?;
    let storage = Arc::new(Storage::new(StorageOptions {
        retention_ms: config.storage.retention.millis(),
        max_series: config.storage.max_series,
    }));
    let engine = Engine {
        lookback_ms: config.rules.lookback_delta.millis(),
        default_subquery_step_ms: config.rules.evaluation_interval.millis(),
    };
    let query: Arc<dyn QueryFn> = match &config.rules.datasource {
        Some(remote) => Arc::new(
            RemoteQuery::new(remote, tokio::runtime::Handle::current())
                .map_err(anyhow::Error::msg)?,
        ),
        None => Arc::new(LocalQuery {
            engine,
            storage: storage.clone(),
        }),
    };
    let mut metrics = Metrics::new(&config.metrics.buckets);
    let (registry, loaded) = Registry::start(&config.models, &metrics);
    let registry = Arc::new(registry);
    metrics.register_collector(Box::new(ModelCollector(registry.clone())));
    metrics.register_collector(Box::new(StorageCollector(storage.clone())));
    let (stop, mut stopped) = watch::channel(false);
    let http_client = reqwest::Client::builder()
        .build()
        .context("cannot build the scrape HTTP client")?;
    let scrape_tasks = scrape::spawn(targets, storage.clone(), http_client, stop.subscribe());
    tokio::spawn(enforce_retention(storage.clone(), stop.subscribe()));
    let rule_count: usize = groups.iter().map(|g| g.rules.len()).sum();
    let evaluation_interval =
        std::time::Duration::from_millis(config.rules.evaluation_interval.millis() as u64);
    let rules = Arc::new(RuleManager::start(
        groups,
        evaluation_interval,
        query,
        storage.clone(),
        config.rules.external_labels.clone(),
        format!("http://{local}"),
        metrics.rules(),
        stop.subscribe(),
    ));
    let app = http::router(
        registry.clone(),
        Arc::new(metrics),
        config.server.max_body_bytes,
        http::QueryApi {
            storage: storage.clone(),
            engine,
            rules,
            evaluation_interval_s: evaluation_interval.as_secs_f64(),
        },
    );
    // Responses are written whole; Nagle's algorithm would only hold back the last segment.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .into_future(),
    );
    tracing::info!(event = "server_started", listen = %local, models = config.models.len(),
        scrape_targets = scrape_tasks.len(), rules = rule_count,
        "listening; models are loading");

    let mut signal = std::pin::pin!(shutdown_signal());
    let signalled_early = tokio::select! {
        outcome = loaded => match outcome {
            Ok(Ok(())) => {
                tracing::info!(event = "models_ready", listen = %local,
                    "every model is loaded and warmed up");
                false
            }
            Ok(Err(failure)) => bail!(failure),
            Err(_) => bail!("model loading ended without a result"),
        },
        name = &mut signal => {
            tracing::info!(event = "shutdown_started", signal = name, "stopping before models were ready");
            true
        }
    };
    if !signalled_early {
        let name = signal.await;
        tracing::info!(
            event = "shutdown_started",
            signal = name,
            drain_timeout_s = config.server.drain_timeout.as_secs_f64(),
            "no longer accepting connections; finishing accepted requests"
        );
    }
    registry.begin_shutdown();
    let _ = stop.send(true);
    match tokio::time::timeout(config.server.drain_timeout, server).await {
        Ok(joined) => {
            let outcome = joined
                .map_err(anyhow::Error::from)
                .and_then(|served| Ok(served?));
            if let Err(e) = outcome {
                tracing::error!(event = "error_occurred", error_type = "server", message = %e);
            }
        }
        Err(_) => {
            tracing::warn!(
                event = "drain_timeout",
                "requests still open after the drain timeout were abandoned"
            );
            return Ok(());
        }
    }
    // The server and its connections are gone, so this is the last handle: dropping it closes the
    // queues, and each worker thread exits once its queue is empty.
    if let Ok(registry) = Arc::try_unwrap(registry) {
        tokio::task::spawn_blocking(move || registry.join()).await?;
    }
    tracing::info!(event = "shutdown_complete");
    Ok(())
}

/// Drops samples past the retention once a minute, off the scrape path.
async fn enforce_retention(storage: Arc<Storage>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let storage = storage.clone();
        let _ = tokio::task::spawn_blocking(move || storage.truncate(scrape::now_ms())).await;
    }
}

async fn shutdown_signal() -> &'static str {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        () = terminate => "SIGTERM",
    }
}
