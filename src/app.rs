//! The `serve` command's lifecycle: bind, load models in the background (the server answers
//! liveness meanwhile and readiness once every model is warm), serve, and on SIGTERM/SIGINT stop
//! accepting, drain what was accepted and exit.

use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;

use std::path::PathBuf;

use crate::config::Config;
use crate::http;
use crate::metrics::{
    CostCollector, Metrics, ModelCollector, ReloadMetrics, ScaleCollector, StorageCollector,
};
use crate::notify;
use crate::policy::{self, Actuator, CostManager, Models, ScaleManager};
use crate::promql::Engine;
use crate::rules::{self, LocalQuery, QueryFn, RemoteQuery, RuleContext, RuleManager};
use crate::scrape::{self, Scraper};
use crate::serve::Registry;
use crate::storage::{Persistence, Storage, StorageOptions};

/// The monitoring half of `serve` that a reload replaces: scrape targets, rule
/// groups and where rule queries run. Start-up and reload share [`Monitoring::apply`].
struct Monitoring {
    config_path: PathBuf,
    own_metrics: scrape::OwnMetrics,
    /// `server.external_url`, or the default built from the bound address.
    external_url: String,
    storage: Arc<Storage>,
    scraper: Scraper,
    rules: Arc<RuleManager>,
    scale: Arc<ScaleManager>,
    cost: Arc<CostManager>,
    /// The served models as they started (a reload does not change them).
    models_config: Vec<crate::config::ModelConfig>,
    /// Set once the first configuration is in effect.
    applied_once: std::sync::atomic::AtomicBool,
    models: Arc<Models>,
    reload_metrics: ReloadMetrics,
    client: reqwest::Client,
    plans: watch::Sender<Arc<notify::Plan>>,
    alerts: notify::AlertSink,
}

impl Monitoring {
    /// Checks everything `config` asks for, then switches to it; on any error
    /// nothing changes.
    fn apply(&self, config: &Config) -> Result<(), String> {
        if let Some(dir) = &config.state.dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("state.dir: cannot create {}: {e}", dir.display()))?;
        }
        let scrape_plan = scrape::plan(&config.scrape, &self.own_metrics)?;
        let targets = scrape_plan.targets();
        let groups = rules::load_all(&config.rules.files)?;
        let query: Arc<dyn QueryFn> = match &config.rules.datasource {
            Some(remote) => Arc::new(RemoteQuery::new(remote, tokio::runtime::Handle::current())?),
            None => Arc::new(LocalQuery {
                engine: engine(config),
                storage: self.storage.clone(),
            }),
        };
        let policy::Policies {
            scale: scale_policies,
            cost: cost_policies,
        } = policy::load_all(&config.policies.files)?;
        let policies = scale_policies
            .into_iter()
            .map(|p| {
                check_model_actuator(&p, &self.models_config)?;
                let actuator = Actuator::build(&p.actuator, &self.models, &self.client)
                    .map_err(|e| format!("{}: scale policy {:?}: {e}", p.file.display(), p.name))?;
                Ok((p, actuator))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let plan = notify::Plan::build(&config.notify, &self.client)?;
        // At start-up (no groups yet) with the built-in store, rules wait for the first
        // scrapes, which finish within the longest scrape timeout.
        let first_evaluation_delay = if !self
            .applied_once
            .swap(true, std::sync::atomic::Ordering::AcqRel)
            && config.rules.datasource.is_none()
        {
            targets.iter().map(|t| t.timeout).max().unwrap_or_default()
        } else {
            std::time::Duration::ZERO
        };
        let (target_count, group_count, policy_count, cost_policy_count) = (
            targets.len(),
            groups.len(),
            policies.len(),
            cost_policies.len(),
        );
        self.plans.send_replace(Arc::new(plan));
        let rule_count: usize = groups.iter().map(|g| g.rules.len()).sum();
        self.scraper.apply(scrape_plan);
        let policy_context = Arc::new(policy::PolicyContext {
            query: query.clone(),
            state_dir: config.state.dir.clone(),
            first_decision_delay: first_evaluation_delay,
        });
        self.scale.apply(policies, policy_context.clone());
        self.cost.apply(cost_policies, policy_context);
        self.rules.apply(
            groups,
            RuleContext {
                query,
                storage: self.storage.clone(),
                external_labels: config.rules.external_labels.clone(),
                external_url: self.external_url.clone(),
                default_interval: std::time::Duration::from_millis(
                    config.rules.evaluation_interval.millis() as u64,
                ),
                alerts: Some(self.alerts.clone()),
                state: config
                    .state
                    .dir
                    .clone()
                    .map(|d| (d, config.state.pending_tolerance.millis())),
                first_evaluation_delay,
            },
        );
        tracing::info!(
            event = "monitoring_configured",
            scrape_targets = target_count,
            rule_groups = group_count,
            rules = rule_count,
            scale_policies = policy_count,
            cost_policies = cost_policy_count,
            "scrape targets, rules and policies in effect"
        );
        Ok(())
    }

    /// Re-reads the config file and its rule files, all or nothing.
    fn reload(&self) -> Result<(), String> {
        let outcome = Config::load(&self.config_path)
            .map_err(|e| e.to_string())
            .and_then(|config| self.apply(&config));
        self.reload_metrics
            .record(outcome.is_ok(), crate::clock::now_ms() as f64 / 1000.0);
        match &outcome {
            Ok(()) => {
                tracing::info!(event = "config_reloaded", config = %self.config_path.display(),
                "configuration reloaded (models and server settings need a restart)")
            }
            Err(e) => {
                tracing::error!(event = "config_reload_failed", config = %self.config_path.display(),
                error = %e, "reload refused; the previous configuration stays in effect")
            }
        }
        outcome
    }
}

/// A policy scaling a model's instances must name a served model and stay within its
/// `instances` bounds (as the models started: a reload does not change them).
fn check_model_actuator(
    p: &policy::ScalePolicy,
    models: &[crate::config::ModelConfig],
) -> Result<(), String> {
    let Some(name) = &p.actuator.model else {
        return Ok(());
    };
    let at = format!(
        "{}: scale policy {:?}: actuator.model",
        p.file.display(),
        p.name
    );
    let model = models
        .iter()
        .find(|m| &m.name == name)
        .ok_or_else(|| format!("{at}: no served model is called {name:?}"))?;
    let (min, max) = (model.instances.min, model.instances.max);
    if (p.min as usize) < min || (p.max as usize) > max {
        return Err(format!(
            "{at}: replicas {}..{} exceed model {name:?}'s instances {min}..{max}; \
             widen models[].instances or narrow the policy",
            p.min, p.max
        ));
    }
    Ok(())
}

fn engine(config: &Config) -> Engine {
    Engine {
        lookback_ms: config.rules.lookback_delta.millis(),
        default_subquery_step_ms: config.rules.evaluation_interval.millis(),
    }
}

/// Runs the server until a shutdown signal, then drains. Errors are one line for the terminal.
/// SIGHUP and `POST /-/reload` re-read `config_path`'s scrape and rule settings.
pub async fn serve(config: Config, config_path: PathBuf) -> anyhow::Result<()> {
    let web = http::Web::load(config.server.web_config_file.as_deref())
        .map_err(|e| anyhow::anyhow!("server.web_config_file: {e}"))?;
    let listen = config.server.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    let admin_listener = match config.server.metrics_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("server.metrics_listen: cannot listen on {address}"))?,
        ),
        None => None,
    };
    let (stop, stopped) = watch::channel(false);
    let storage = Arc::new(Storage::new(StorageOptions {
        retention_ms: config.storage.retention.millis(),
        max_series: config.storage.max_series,
    }));
    let mut metrics = Metrics::new(&config.metrics.buckets);
    let http_client = reqwest::Client::builder()
        .build()
        .context("cannot build the scrape HTTP client")?;
    let (plans, current_plan) = watch::channel(Arc::new(
        notify::Plan::build(&Default::default(), &http_client).map_err(anyhow::Error::msg)?,
    ));
    if let Some(dir) = &config.state.dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("state.dir: cannot create {}", dir.display()))?;
    }
    // Before any scrape or rule evaluation, so rules see the samples of the last run.
    let (finish_persistence, finish) = watch::channel(false);
    let persistence = match &config.state.dir {
        Some(dir) => Some(persist(
            replay(dir.clone(), storage.clone()).await?,
            std::time::Duration::from_millis(config.storage.flush_interval.millis() as u64),
            finish,
        )),
        None => None,
    };
    // Links in notifications lead to the status page, which lives on the admin port when there
    // is one.
    let linked = match &admin_listener {
        Some(admin) => admin.local_addr()?,
        None => local,
    };
    let external_url = config.server.external_url(linked, web.is_tls());
    let routes = Arc::new(std::sync::OnceLock::new());
    let own_metrics = scrape::OwnMetrics {
        address: linked,
        tls: web.is_tls(),
        in_process: web
            .has_file()
            .then(|| http::in_process_metrics(routes.clone())),
    };
    let silences = Arc::new(notify::Silences::open(
        config.state.dir.as_ref().map(|d| d.join("silences.json")),
    ));
    let alerts = notify::start(
        current_plan.clone(),
        external_url.clone(),
        config.notify.queue_capacity.unwrap_or(10_000),
        config
            .state
            .dir
            .as_ref()
            .map(|d| d.join("notifications.json")),
        silences.clone(),
        metrics.notify(),
        stop.subscribe(),
    );
    let alertmanager_api =
        notify::AlertmanagerApi::new(alerts.clone(), silences, current_plan, stop.subscribe());
    let monitoring = Arc::new(Monitoring {
        config_path,
        own_metrics,
        external_url,
        storage: storage.clone(),
        scraper: Scraper::new(storage.clone(), stop.subscribe()),
        rules: Arc::new(RuleManager::new(metrics.rules(), stop.subscribe())),
        scale: Arc::new(ScaleManager::new(stop.subscribe())),
        cost: Arc::new(CostManager::new(stop.subscribe())),
        models_config: config.models.clone(),
        applied_once: Default::default(),
        models: Arc::new(Models::default()),
        reload_metrics: metrics.reload(),
        client: http_client,
        plans,
        alerts,
    });
    // Everything that can be refused is checked before models start loading.
    monitoring.apply(&config).map_err(anyhow::Error::msg)?;
    monitoring
        .reload_metrics
        .record(true, crate::clock::now_ms() as f64 / 1000.0);
    tokio::spawn(enforce_retention(storage.clone(), stop.subscribe()));
    tokio::spawn(reload_on_sighup(monitoring.clone(), stop.subscribe()));
    let (registry, loaded) = Registry::start(&config.models, &metrics);
    let registry = Arc::new(registry);
    monitoring.models.set(&registry);
    metrics.register_collector(Box::new(ModelCollector(registry.clone())));
    metrics.register_collector(Box::new(ScaleCollector(monitoring.scale.clone())));
    metrics.register_collector(Box::new(CostCollector(monitoring.cost.clone())));
    metrics.register_collector(Box::new(StorageCollector(storage.clone())));
    metrics.register_collector(Box::new(crate::metrics::SilenceCollector(Box::new(
        alertmanager_api.clone(),
    ))));
    let reloader = monitoring.clone();
    let routers = http::router(
        registry.clone(),
        Arc::new(metrics),
        &config,
        web.clone(),
        http::QueryApi {
            storage: storage.clone(),
            engine: engine(&config),
            rules: monitoring.rules.clone(),
            scale: monitoring.scale.clone(),
            cost: monitoring.cost.clone(),
            models: registry.clone(),
            limits: http::QueryLimits {
                timeout: config.server.query_timeout,
                max_samples: config.server.query_max_samples,
                slots: Arc::new(tokio::sync::Semaphore::new(
                    config.server.query_max_concurrency,
                )),
                stop: stop.subscribe(),
            },
        },
        alertmanager_api,
        Arc::new(move || reloader.reload()),
    );
    // The self-scrape reads /metrics from whichever router serves it.
    let _ = routes.set(
        routers
            .admin
            .clone()
            .unwrap_or_else(|| routers.inference.clone()),
    );
    let limits = http::ConnectionLimits {
        header_read_timeout: config.server.header_read_timeout,
        max_connections: config.server.max_connections,
    };
    let inference = http::serve(
        listener,
        routers.inference,
        limits,
        web.clone(),
        stopped.clone(),
    );
    let admin = match (admin_listener, routers.admin) {
        (Some(listener), Some(router)) => {
            let address = listener.local_addr()?;
            tracing::info!(event = "admin_listener_started", listen = %address,
                "metrics, query API, status page and admin routes listen here");
            Some(http::serve(
                listener,
                router,
                limits,
                web.clone(),
                stopped.clone(),
            ))
        }
        _ => None,
    };
    let server = tokio::spawn(async move {
        match admin {
            Some(admin) => {
                tokio::join!(inference, admin);
            }
            None => inference.await,
        }
    });
    tokio::spawn(web.clone().watch(stopped));
    tracing::info!(event = "server_started", listen = %local, tls = web.is_tls(),
        models = config.models.len(), scrape_targets = monitoring.scraper.len(),
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
    let drained = match tokio::time::timeout(config.server.drain_timeout, server).await {
        Ok(joined) => {
            if let Err(e) = joined {
                tracing::error!(event = "error_occurred", error_type = "server", message = %e);
            }
            true
        }
        Err(_) => {
            tracing::warn!(
                event = "drain_timeout",
                "requests still open after the drain timeout were abandoned"
            );
            false
        }
    };
    // After the drain, so the snapshot holds every sample that was appended.
    let _ = finish_persistence.send(true);
    if let Some(persistence) = persistence {
        let _ = persistence.await;
    }
    if !drained {
        return Ok(());
    }
    // The server and its connections are gone, so this is the last handle: dropping it closes the
    // queues, and each worker thread exits once its queue is empty.
    match Arc::try_unwrap(registry) {
        Ok(registry) => tokio::task::spawn_blocking(move || registry.join()).await?,
        // A scale decision still holds it for an instant; the workers end with the process.
        Err(_) => tracing::warn!(
            event = "drain_incomplete",
            "model workers were not joined: the registry is still in use"
        ),
    }
    tracing::info!(event = "shutdown_complete");
    Ok(())
}

/// Replays the store's files under `dir`, off the async threads.
async fn replay(dir: PathBuf, storage: Arc<Storage>) -> anyhow::Result<Persistence> {
    let (persistence, replayed) =
        tokio::task::spawn_blocking(move || Persistence::open(&dir, storage)).await?;
    tracing::info!(
        event = "storage_replayed",
        series = replayed.series,
        samples = replayed.samples,
        duration_s = replayed.seconds,
        "samples of the last run are back in the store"
    );
    Ok(persistence)
}

/// Flushes the store's log every `every`, and writes the final snapshot when `finish` says so.
fn persist(
    mut persistence: Persistence,
    every: std::time::Duration,
    mut finish: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            let last = tokio::select! {
                _ = ticker.tick() => false,
                _ = finish.wait_for(|f| *f) => true,
            };
            // Failures are counted and logged by the persistence itself; serving goes on.
            let written = tokio::task::spawn_blocking(move || {
                let _ = if last {
                    persistence.checkpoint()
                } else {
                    persistence.flush()
                };
                persistence
            })
            .await;
            match written {
                Ok(back) if !last => persistence = back,
                _ => return,
            }
        }
    })
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
        let _ = tokio::task::spawn_blocking(move || storage.truncate(crate::clock::now_ms())).await;
    }
}

/// SIGHUP reloads, as for Prometheus.
async fn reload_on_sighup(monitoring: Arc<Monitoring>, mut stop: watch::Receiver<bool>) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        return;
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let monitoring = monitoring.clone();
        // Reading files and waiting for a running evaluation block.
        let _ = tokio::task::spawn_blocking(move || monitoring.reload()).await;
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
