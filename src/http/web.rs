//! The web configuration in force: TLS for new connections, basic auth, extra headers and the
//! rate limit, re-read when the file or a certificate it names changes (a rotated certificate
//! is served without a restart; an invalid change keeps the last good configuration and says
//! why once), and the middleware that applies them to every route, as exporter-toolkit does.

use crate::config::{Secret, WebConfig};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

/// exporter-toolkit's stand-in hash (of "fakepassword") for unknown users, so a wrong user name
/// costs as much as a wrong password and timing does not tell which names exist.
const UNKNOWN_USER_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
/// Verdicts kept, so a client that authenticates on every request pays bcrypt once.
const AUTH_CACHE_ENTRIES: usize = 1024;
/// How often the file and the certificates it names are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// One version of the web configuration, ready to use.
pub struct WebSecurity {
    /// The TLS configuration new connections get; `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    users: BTreeMap<String, Secret>,
    headers: Vec<(HeaderName, HeaderValue)>,
    limiter: Option<Mutex<TokenBucket>>,
}

impl WebSecurity {
    fn build(config: &WebConfig) -> Result<WebSecurity, String> {
        let tls = match &config.tls_server_config {
            Some(tls) => Some(Arc::new(crate::tls::server_config(tls)?)),
            None => None,
        };
        let headers = config
            .http_server_config
            .headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| format!("http_server_config.headers.{name}: {e}"))?;
                let value = HeaderValue::from_str(value)
                    .map_err(|e| format!("http_server_config.headers.{name}: {e}"))?;
                Ok((name, value))
            })
            .collect::<Result<_, String>>()?;
        let limiter = config
            .rate_limit
            .filter(|limit| limit.interval.millis() > 0)
            .map(|limit| {
                Mutex::new(TokenBucket::new(
                    Duration::from_millis(limit.interval.millis() as u64),
                    limit.burst,
                ))
            });
        Ok(WebSecurity {
            tls,
            users: config.basic_auth_users.clone(),
            headers,
            limiter,
        })
    }
}

/// The web configuration shared by the listeners and the middleware.
#[derive(Clone)]
pub struct Web {
    shared: Arc<Shared>,
}

struct Shared {
    path: Option<PathBuf>,
    current: RwLock<Arc<WebSecurity>>,
    /// What the file and its certificates held when `current` was built, or when a change was
    /// last refused (so a bad file is reported once, not every second).
    seen: Mutex<u64>,
    verdicts: Mutex<HashMap<[u8; 32], bool>>,
    /// One bcrypt comparison at a time: each costs tens of milliseconds of CPU, and a flood of
    /// wrong passwords must not take every core from inference.
    bcrypt: Semaphore,
}

impl Web {
    /// Reads `path` (no file: plain HTTP, no authentication). An error here refuses the start.
    pub fn load(path: Option<&Path>) -> Result<Web, String> {
        let (security, seen) = match path {
            Some(path) => {
                let config = WebConfig::load(path)?;
                let security =
                    WebSecurity::build(&config).map_err(|e| format!("{}: {e}", path.display()))?;
                (security, fingerprint(path, &config))
            }
            None => (WebSecurity::build(&WebConfig::default())?, 0),
        };
        Ok(Web {
            shared: Arc::new(Shared {
                path: path.map(Path::to_path_buf),
                current: RwLock::new(Arc::new(security)),
                seen: Mutex::new(seen),
                verdicts: Mutex::new(HashMap::new()),
                bcrypt: Semaphore::new(1),
            }),
        })
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<WebSecurity> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True when a web config file is in force: its TLS client certificates and passwords (which
    /// may change while running) are beyond what torchwatch's own scraper can present.
    pub fn has_file(&self) -> bool {
        self.shared.path.is_some()
    }

    /// True when the listeners speak TLS (fixed at start).
    pub fn is_tls(&self) -> bool {
        self.current().tls.is_some()
    }

    /// Re-reads the file and its certificates every second until `stop`, taking a changed
    /// configuration when it is valid.
    pub async fn watch(self, mut stop: watch::Receiver<bool>) {
        let Some(path) = self.shared.path.clone() else {
            return;
        };
        let mut ticker = tokio::time::interval(WATCH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let web = self.clone();
            let path = path.clone();
            let _ = tokio::task::spawn_blocking(move || web.refresh(&path)).await;
        }
    }

    fn refresh(&self, path: &Path) {
        let loaded = WebConfig::load(path).map(|config| {
            let seen = fingerprint(path, &config);
            (config, seen)
        });
        let (config, seen) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                // The unreadable text itself is the change to report once.
                let seen = std::fs::read(path).map_or(1, |bytes| hash_of(&[bytes]));
                self.refuse(seen, &e);
                return;
            }
        };
        if *crate::sync::lock(&self.shared.seen) == seen {
            return;
        }
        let built = WebSecurity::build(&config).and_then(|security| {
            if security.tls.is_some() != self.is_tls() {
                return Err("turning TLS on or off needs a restart; the listeners keep \
                            what they started with"
                    .into());
            }
            Ok(security)
        });
        match built {
            Ok(security) => {
                *self
                    .shared
                    .current
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = Arc::new(security);
                *crate::sync::lock(&self.shared.seen) = seen;
                tracing::info!(event = "web_config_reloaded", file = %path.display(),
                    "web config changed; new connections and requests use it");
            }
            Err(e) => self.refuse(seen, &format!("{}: {e}", path.display())),
        }
    }

    fn refuse(&self, seen: u64, error: &str) {
        let mut last = crate::sync::lock(&self.shared.seen);
        if *last != seen {
            *last = seen;
            tracing::error!(event = "web_config_refused", error = %error,
                "the web config change was refused; the last good one stays in force");
        }
    }

    /// Whether `authorization` (a request's header) names a configured user and password.
    async fn authenticates(&self, users: &BTreeMap<String, Secret>, authorization: &str) -> bool {
        let Some((user, password)) = basic_credentials(authorization) else {
            return false;
        };
        let known = users.get(&user);
        let hash = known.map_or(UNKNOWN_USER_HASH, |h| h.expose()).to_string();
        let key = verdict_key(&user, &hash, &password);
        if let Some(verdict) = crate::sync::lock(&self.shared.verdicts).get(&key) {
            return *verdict && known.is_some();
        }
        let Ok(_slot) = self.shared.bcrypt.acquire().await else {
            return false;
        };
        let matches = tokio::task::spawn_blocking(move || {
            bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let mut verdicts = crate::sync::lock(&self.shared.verdicts);
        if verdicts.len() >= AUTH_CACHE_ENTRIES {
            verdicts.clear();
        }
        verdicts.insert(key, matches);
        matches && known.is_some()
    }
}

/// `Basic base64(user:password)`, split at the first colon as RFC 7617 says.
fn basic_credentials(authorization: &str) -> Option<(String, String)> {
    let (scheme, encoded) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The cache key is a digest, so the cache never holds a password.
fn verdict_key(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash, password] {
        context.update(&(part.len() as u64).to_le_bytes());
        context.update(part.as_bytes());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

/// The file's bytes and those of every certificate and key it names.
fn fingerprint(path: &Path, config: &WebConfig) -> u64 {
    let mut parts = vec![std::fs::read(path).unwrap_or_default()];
    if let Some(tls) = &config.tls_server_config {
        for file in [&tls.cert_file, &tls.key_file, &tls.client_ca_file]
            .into_iter()
            .flatten()
        {
            parts.push(std::fs::read(file).unwrap_or_default());
        }
    }
    hash_of(&parts)
}

fn hash_of(parts: &[Vec<u8>]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

/// exporter-toolkit's rate limiter: `burst` requests at once, refilled one per `interval`.
struct TokenBucket {
    interval: Duration,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(interval: Duration, burst: u32) -> TokenBucket {
        TokenBucket {
            interval,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() / self.interval.as_secs_f64();
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Applies the web configuration to a request: the rate limit (429), basic auth (401 with
/// `WWW-Authenticate: Basic`) and the extra headers on every answer.
pub async fn guard(State(web): State<Web>, request: Request, next: Next) -> Response {
    let security = web.current();
    if request
        .extensions()
        .get::<super::InProcessRequest>()
        .is_some()
    {
        return next.run(request).await;
    }
    let limited = security
        .limiter
        .as_ref()
        .is_some_and(|bucket| !crate::sync::lock(bucket).allow());
    let mut response = if limited {
        (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").into_response()
    } else if security.users.is_empty() {
        next.run(request).await
    } else {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if web.authenticates(&security.users, authorization).await {
            next.run(request).await
        } else {
            let mut denied = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
            denied
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            denied
        }
    };
    for (name, value) in &security.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_split_at_the_first_colon() {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pa:ss")
        );
        assert_eq!(
            basic_credentials(&header),
            Some(("alice".to_string(), "pa:ss".to_string()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }

    #[test]
    fn the_bucket_allows_a_burst_then_refills() {
        let mut bucket = TokenBucket::new(Duration::from_secs(3600), 2);
        assert!(bucket.allow());
        assert!(bucket.allow());
        assert!(!bucket.allow());
        bucket.last -= Duration::from_secs(3600);
        assert!(bucket.allow());
        assert!(!bucket.allow());
    }

    #[test]
    fn verdict_keys_differ_for_shifted_fields() {
        assert_ne!(verdict_key("ab", "c", "d"), verdict_key("a", "bc", "d"));
    }
}
