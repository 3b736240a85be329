//! The `torchwatch` command line.

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Parser, Subcommand};

use torchwatch::cmd::{self, check, cost_report, query};
use torchwatch::config::{Config, parse_device, parse_duration};
use torchwatch::{app, logs, model, policy, profile};

#[derive(Parser)]
#[command(
    version,
    about = "Serve a TorchScript model over the KServe V2 protocol and watch it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the models of a config file over the KServe V2 REST protocol.
    Serve {
        /// Config file.
        #[arg(long, short, default_value = "torchwatch.yaml")]
        config: PathBuf,
        /// Listen address, overriding server.listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Also write JSON logs to this file, overriding logging.file.
        #[arg(long)]
        log_file: Option<PathBuf>,
        /// Log level or filter directive, overriding logging.level.
        #[arg(long)]
        log_level: Option<String>,
        /// How long to finish accepted requests after SIGTERM, overriding server.drain_timeout.
        #[arg(long, value_parser = parse_duration)]
        drain_timeout: Option<Duration>,
        /// The URL users reach torchwatch at, overriding server.external_url (as Prometheus'
        /// flag of the same name).
        #[arg(long = "web.external-url")]
        external_url: Option<String>,
        /// Serve POST /-/reload and silence writes, overriding server.enable_lifecycle (as
        /// Prometheus' --web.enable-lifecycle).
        #[arg(long = "web.enable-lifecycle")]
        enable_lifecycle: bool,
        /// exporter-toolkit web config (TLS, basic auth, headers), overriding
        /// server.web_config_file (as Prometheus' flag of the same name).
        #[arg(long = "web.config.file")]
        web_config_file: Option<PathBuf>,
    },
    /// Measure a model's forward latency on random inputs.
    Profile {
        /// TorchScript file.
        model: PathBuf,
        /// Shape of one sample without the batch dimension, e.g. 784 or 3,64,64.
        #[arg(long, value_delimiter = ',', required = true)]
        input_shape: Vec<i64>,
        /// Batch sizes to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        batch_sizes: Vec<i64>,
        /// Timed forward passes per batch size.
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        /// Untimed forward passes before timing.
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        /// LibTorch intra-op threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// cpu, cuda, cuda:N or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Work with torchwatch's JSON log files.
    Logs {
        #[command(subcommand)]
        command: LogsCommand,
    },
    /// Check and unit-test Prometheus-format rule files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Check policy files.
    Policies {
        #[command(subcommand)]
        command: PoliciesCommand,
    },
    /// Backtest scale policies.
    Scale {
        #[command(subcommand)]
        command: ScaleCommand,
    },
    /// What serving costs, from a running torchwatch's cost policies.
    Cost {
        #[command(subcommand)]
        command: CostCommand,
    },
    /// Validate a config with the files it names, or an exposition (like promtool check).
    Check {
        #[command(subcommand)]
        command: CheckCommand,
    },
    /// Ask a Prometheus-compatible query API (like promtool query).
    Query {
        #[command(subcommand)]
        command: QueryCommand,
    },
    /// Work with the notification settings (like amtool config routes).
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Try a rule annotation template.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
}

#[derive(Subcommand)]
enum TemplateCommand {
    /// Expand TEXT as an alert's annotation would be, and print it; exit 1 on an error.
    /// With `--template.glob`, expand it as a notification template instead, against
    /// Alertmanager's default templates plus those files, with `amtool template render`'s
    /// example data.
    Render {
        /// The template, e.g. 'p99 of {{ $labels.model }} is {{ $value | humanizeDuration }}'.
        text: String,
        /// Notification template files (globs), as Alertmanager's `templates:`.
        #[arg(long = "template.glob")]
        globs: Vec<String>,
        /// `text` or `html` (notification templates only).
        #[arg(long = "template.type", default_value = "text", value_parser = ["text", "html"])]
        template_type: String,
        /// `$labels`, name=value.
        #[arg(long = "label", value_parser = logs::parse_field)]
        labels: Vec<(String, String)>,
        /// `$externalLabels`, name=value.
        #[arg(long = "external-label", value_parser = logs::parse_field)]
        external_labels: Vec<(String, String)>,
        /// `$value`.
        #[arg(long, default_value_t = 0.0)]
        value: f64,
        /// `$externalURL`.
        #[arg(long = "external-url", default_value = "http://localhost:8080")]
        external_url: String,
    },
}

#[derive(Subcommand)]
enum NotifyCommand {
    /// The routing tree.
    Routes {
        #[command(subcommand)]
        command: RoutesCommand,
    },
}

#[derive(Subcommand)]
enum RoutesCommand {
    /// Which receivers an alert with these labels reaches (`amtool config routes test`).
    Test {
        /// Config file.
        #[arg(long, short, default_value = "torchwatch.yaml")]
        config: PathBuf,
        /// Exit 1 unless the receivers are exactly these, comma-separated, in order.
        #[arg(long = "verify.receivers")]
        verify: Option<String>,
        /// The alert's labels, name=value.
        #[arg(required = true, value_parser = logs::parse_field)]
        labels: Vec<(String, String)>,
    },
}

#[derive(Subcommand)]
enum CheckCommand {
    /// A config file with its rule, policy and notification settings; exit status 1 on error.
    Config {
        /// Config files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Prometheus text read from stdin: parse errors and promtool's lints; exit 1 on any.
    Metrics,
}

#[derive(Subcommand)]
enum QueryCommand {
    /// An instant query.
    Instant {
        /// Base URL, e.g. http://127.0.0.1:8080.
        url: String,
        /// PromQL.
        expr: String,
        /// Evaluation time, Unix seconds or RFC 3339 (default: now).
        #[arg(long)]
        time: Option<String>,
    },
    /// A range query.
    Range {
        /// Base URL, e.g. http://127.0.0.1:8080.
        url: String,
        /// PromQL.
        expr: String,
        /// Unix seconds or RFC 3339 (default: 5 minutes before --end).
        #[arg(long)]
        start: Option<String>,
        /// Unix seconds or RFC 3339 (default: now).
        #[arg(long)]
        end: Option<String>,
        /// Resolution, e.g. 15s (default: about 250 points).
        #[arg(long)]
        step: Option<String>,
    },
}

#[derive(Subcommand)]
enum CostCommand {
    /// Current costs, efficiency, right-sizing and cache advice, as a table (or JSON).
    Report {
        /// The config of the running torchwatch; its server.listen is asked.
        #[arg(long, short, default_value = "torchwatch.yaml", conflicts_with = "url")]
        config: PathBuf,
        /// The running torchwatch's base URL, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: Option<String>,
        /// Print the JSON of /api/v1/cost instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PoliciesCommand {
    /// Validate policy files; exit status 1 on any error.
    Check {
        /// Policy files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ScaleCommand {
    /// Replay a load trace through scale policies and compare them.
    Simulate {
        /// CSV `timestamp,value` with a header: offered requests per second.
        #[arg(long)]
        trace: PathBuf,
        /// Multiply the trace's values by this (e.g. counts per step into req/s).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Policy files.
        #[arg(long, required = true, num_args = 1..)]
        policies: Vec<PathBuf>,
        /// Only these policies (default: all in the files).
        #[arg(long = "policy")]
        names: Vec<String>,
        /// Requests per second one replica serves.
        #[arg(long)]
        capacity: f64,
        /// From decision to ready replica.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        startup: Duration,
        /// A minute violates the SLO when load exceeds this share of ready capacity.
        #[arg(long, default_value_t = 1.0)]
        slo_utilization: f64,
        /// Cost of one replica-hour, for policies without `price_per_replica_hour`.
        #[arg(long, default_value_t = 0.0)]
        price_per_replica_hour: f64,
        /// How often the simulated deployment is scraped.
        #[arg(long, value_parser = parse_duration, default_value = "15s")]
        scrape_interval: Duration,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// With --json: one `[unix_seconds, offered_rps, ready, desired]` row per trace step.
        #[arg(long)]
        timeline: bool,
        /// Write an SVG of offered load and each policy's ready capacity.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Plot only the trace's last stretch of this length (e.g. 7d).
        #[arg(long, value_parser = parse_duration)]
        plot_last: Option<Duration>,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate rule files like `promtool check rules`; exit status 1 on any error.
    Check {
        /// Rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run promtool-format rule unit tests like `promtool test rules`; exit status 1 on any failure.
    Test {
        /// Unit-test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write rule files as plain Prometheus rules (short-form alerts compiled to `expr`).
    Export {
        /// Rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Directory the exported files are written to, under their own names.
        #[arg(long, short)]
        output_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum LogsCommand {
    /// Print the log lines that match every filter; exit status 1 when none does.
    Search {
        /// Log file, or - for standard input.
        file: PathBuf,
        /// Only this event (response_sent, error_occurred, or at debug request_received, model_inference).
        #[arg(long)]
        event: Option<String>,
        /// Only this level or more severe: trace, debug, info, warn, error.
        #[arg(long)]
        level: Option<String>,
        /// Only lines at or after this RFC 3339 time, or this long ago (15m).
        #[arg(long)]
        since: Option<String>,
        /// Only lines at or before this RFC 3339 time, or this long ago.
        #[arg(long)]
        until: Option<String>,
        /// Fields that must match exactly, e.g. request_id=abc status=400.
        #[arg(value_parser = logs::parse_field)]
        fields: Vec<(String, String)>,
    },
}

fn main() -> ExitCode {
    torchwatch::install_tls_provider();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("torchwatch: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            log_file,
            log_level,
            drain_timeout,
            external_url,
            enable_lifecycle,
            web_config_file,
        } => {
            let path = config;
            let mut config = Config::load(&path)?;
            if let Some(url) = external_url {
                torchwatch::config::check_external_url(&url)
                    .map_err(|e| anyhow::anyhow!("--web.external-url: {e}"))?;
                config.server.external_url = Some(url);
            }
            if enable_lifecycle {
                config.server.enable_lifecycle = true;
            }
            if web_config_file.is_some() {
                config.server.web_config_file = web_config_file;
            }
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            if let Some(timeout) = drain_timeout {
                config.server.drain_timeout = timeout;
            }
            if log_file.is_some() {
                config.logging.file = log_file;
            }
            if let Some(level) = log_level {
                config.logging.level = level;
            }
            let _logs = logs::init(&config.logging.level, config.logging.file.as_deref())?;
            torchwatch::memory::tune_for_serving();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .on_thread_park(torchwatch::memory::prepare_release_when_parking)
                .build()
                .context("cannot start the async runtime")?;
            let served = runtime.block_on(app::serve(config, path));
            // The drain already gave in-flight work its time: a blocking task still running
            // (an evaluation that ignores its flag) must not keep the process alive.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            served?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Profile {
            model: path,
            input_shape,
            batch_sizes,
            iterations,
            warmup,
            threads,
            device,
            json,
        } => {
            anyhow::ensure!(iterations > 0, "--iterations must be at least 1");
            anyhow::ensure!(threads > 0, "--threads must be at least 1");
            anyhow::ensure!(
                batch_sizes.iter().chain(&input_shape).all(|&d| d > 0),
                "--batch-sizes and --input-shape take positive sizes"
            );
            let spec = parse_device(&device).map_err(|e| anyhow::anyhow!("--device: {e}"))?;
            let device = model::resolve_device(spec)?;
            let plan = profile::Plan {
                input_shape,
                batch_sizes,
                iterations,
                warmup,
                threads,
            };
            let results = profile::run(&path, device, &plan)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                println!(
                    "{} on {}, {} thread(s), {} timed passes per batch size",
                    path.display(),
                    model::device_name(device),
                    threads,
                    iterations
                );
                print!("{}", profile::table(&results));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules { command } => {
            let ok = match command {
                RulesCommand::Check { files } => cmd::rules::check_files(&files),
                RulesCommand::Test { files } => cmd::rules::run_test_files(&files),
                RulesCommand::Export { files, output_dir } => {
                    std::fs::create_dir_all(&output_dir)
                        .with_context(|| format!("cannot create {}", output_dir.display()))?;
                    cmd::rules::export_files(&files, &output_dir)
                }
            };
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Policies {
            command: PoliciesCommand::Check { files },
        } => Ok(if policy::check_files(&files) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::Scale {
            command:
                ScaleCommand::Simulate {
                    trace,
                    scale,
                    policies,
                    names,
                    capacity,
                    startup,
                    slo_utilization,
                    price_per_replica_hour,
                    scrape_interval,
                    json,
                    timeline,
                    plot,
                    plot_last,
                },
        } => {
            anyhow::ensure!(capacity > 0.0, "--capacity must be above 0");
            anyhow::ensure!(scale > 0.0, "--scale must be above 0");
            anyhow::ensure!(
                scrape_interval >= Duration::from_millis(1),
                "--scrape-interval must be at least 1ms"
            );
            let text = std::fs::read_to_string(&trace)
                .with_context(|| format!("cannot read {}", trace.display()))?;
            let trace = policy::simulate::parse_trace(&text, &trace.display().to_string(), scale)
                .map_err(anyhow::Error::msg)?;
            let patterns: Vec<String> = policies
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let mut loaded = policy::load_all(&patterns)
                .map_err(anyhow::Error::msg)?
                .scale;
            if let Some(unknown) = names.iter().find(|n| !loaded.iter().any(|p| &p.name == *n)) {
                anyhow::bail!("--policy {unknown}: no such policy in the files given");
            }
            if !names.is_empty() {
                loaded.retain(|p| names.contains(&p.name));
            }
            let plan = policy::simulate::Plan {
                capacity,
                startup_ms: startup.as_millis() as i64,
                slo_utilization,
                price_per_replica_hour,
                scrape_interval_ms: scrape_interval.as_millis() as i64,
                timeline: timeline || plot.is_some(),
            };
            let mut outcomes = policy::simulate::run_all(&loaded, &trace, &plan);
            if let Some(path) = &plot {
                let last_ms = plot_last.map(|d| d.as_millis() as i64);
                policy::simulate::plot(path, &trace, &outcomes, capacity, last_ms)
                    .map_err(anyhow::Error::msg)?;
            }
            if !timeline {
                outcomes.iter_mut().for_each(|o| o.timeline = None);
            }
            if json {
                let report = serde_json::json!({
                    "trace": trace.name,
                    "steps": trace.points.len(),
                    "policies": outcomes,
                });
                println!("{report}");
            } else {
                print!("{}", policy::simulate::table(&outcomes));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Notify {
            command:
                NotifyCommand::Routes {
                    command:
                        RoutesCommand::Test {
                            config,
                            verify,
                            labels,
                        },
                },
        } => cmd::notify::routes_test(&config, verify.as_deref(), &labels),
        Command::Template {
            command:
                TemplateCommand::Render {
                    text,
                    globs,
                    template_type,
                    ..
                },
        } if !globs.is_empty() => {
            let expanded =
                cmd::template::render_notification(&text, &globs, template_type == "html")?;
            print!("{expanded}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Template {
            command:
                TemplateCommand::Render {
                    text,
                    labels,
                    external_labels,
                    value,
                    external_url,
                    ..
                },
        } => {
            let labels = labels.into_iter().collect();
            let external_labels = external_labels.into_iter().collect();
            let expanded =
                cmd::template::render_rule(&text, &labels, &external_labels, &external_url, value)?;
            println!("{expanded}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            command: CheckCommand::Config { files },
        } => {
            let mut ok = true;
            for file in &files {
                ok &= check::config(file);
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Check {
            command: CheckCommand::Metrics,
        } => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("cannot read stdin")?;
            let problems = check::metrics(&text);
            for p in &problems {
                eprintln!("{p}");
            }
            Ok(if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Query { command } => {
            let (url, endpoint, params) = match command {
                QueryCommand::Instant { url, expr, time } => {
                    let mut params = vec![("query", expr)];
                    if let Some(t) = time {
                        params.push(("time", t));
                    }
                    (url, "query", params)
                }
                QueryCommand::Range {
                    url,
                    expr,
                    start,
                    end,
                    step,
                } => {
                    let now = torchwatch::clock::now_ms() as f64 / 1000.0;
                    let (start, end, step) =
                        query::range_params(start.as_deref(), end.as_deref(), step.as_deref(), now)
                            .map_err(anyhow::Error::msg)?;
                    let params = vec![
                        ("query", expr),
                        ("start", start.to_string()),
                        ("end", end.to_string()),
                        ("step", step),
                    ];
                    (url, "query_range", params)
                }
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let data = runtime.block_on(query::fetch(&url, endpoint, &params))?;
            print!("{}", query::render(&data));
            Ok(ExitCode::SUCCESS)
        }
        Command::Cost {
            command: CostCommand::Report { config, url, json },
        } => {
            let base = match url {
                Some(url) => url,
                None => cost_report::url_of(Config::load(&config)?.server.listen),
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let data = runtime.block_on(cost_report::fetch(&base))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else {
                print!("{}", cost_report::render(&data));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs {
            command:
                LogsCommand::Search {
                    file,
                    event,
                    level,
                    since,
                    until,
                    fields,
                },
        } => {
            let now = SystemTime::now();
            let time = |flag: &str, value: Option<String>| {
                value
                    .map(|v| logs::parse_time(&v, now).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
                    .transpose()
            };
            let filter = logs::Filter {
                event,
                level,
                since: time("--since", since)?,
                until: time("--until", until)?,
                fields: fields.into_iter().collect(),
            };
            filter.validate().map_err(anyhow::Error::msg)?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let matched = if file.as_os_str() == "-" {
                logs::search(std::io::stdin().lock(), &filter, &mut out)?
            } else {
                let reader = std::fs::File::open(&file)
                    .with_context(|| format!("cannot open {}", file.display()))?;
                logs::search(BufReader::new(reader), &filter, &mut out)?
            };
            Ok(if matched > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
