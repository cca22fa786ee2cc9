//! The Home Assistant Supervisor's MQTT service (`GET /services/mqtt`), for add-on mode.
//!
//! Inside the add-on the Supervisor tells us the broker (normally the Mosquitto add-on) and a
//! user for it. Until a broker provides the service the call fails ("Service not enabled"): we
//! retry with backoff and say so in the log.

use std::time::Duration;

use serde::Deserialize;

use crate::backoff::Backoff;
use crate::{Error, Result};

/// Broker coordinates from the Supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerService {
    /// Host (e.g. `core-mosquitto`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS?
    pub ssl: bool,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    result: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    host: String,
    port: PortValue,
    #[serde(default)]
    ssl: bool,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The port arrives as a number or as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum PortValue {
    Number(u16),
    Text(String),
}

/// `GET <base><path>` with the Supervisor token; returns the URL (for messages) and the answer.
async fn get(
    base_url: &str,
    path: &str,
    token: &str,
    timeout: Duration,
) -> Result<(String, reqwest::Response)> {
    let url = format!("{}{path}", base_url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| Error::Mqtt(format!("HTTP client: {e}")))?;
    let response = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| Error::Mqtt(format!("Supervisor {url}: {e}")))?;
    Ok((url, response))
}

/// Asks the Supervisor once.
pub async fn fetch(base_url: &str, token: &str) -> Result<BrokerService> {
    let (url, response) = get(base_url, "/services/mqtt", token, Duration::from_secs(10)).await?;
    let status = response.status();
    let envelope: Envelope = response.json().await.map_err(|e| {
        Error::Mqtt(format!(
            "Supervisor {url} answered {status} with unexpected JSON: {e}"
        ))
    })?;
    let data = match (envelope.result.as_str(), envelope.data) {
        ("ok", Some(data)) => data,
        (_, _) => {
            return Err(Error::Mqtt(format!(
                "Supervisor has no MQTT service yet ({status}: {})",
                envelope.message.unwrap_or_else(|| envelope.result.clone())
            )));
        }
    };
    let port = match data.port {
        PortValue::Number(p) => p,
        PortValue::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| Error::Mqtt(format!("Supervisor sent an invalid MQTT port `{t}`")))?,
    };
    Ok(BrokerService {
        host: data.host,
        port,
        ssl: data.ssl,
        username: data.username.filter(|u| !u.is_empty()),
        password: data.password.filter(|p| !p.is_empty()),
    })
}

#[derive(Deserialize)]
struct CoreConfig {
    #[serde(default)]
    country: Option<String>,
}

/// Home Assistant's configured country (`GET <supervisor>/core/api/config`, needs
/// `homeassistant_api: true`), as an ISO 3166-1 alpha-2 code; `None` when unset or invalid.
pub async fn home_assistant_country(base_url: &str, token: &str) -> Result<Option<String>> {
    let (url, response) = get(base_url, "/core/api/config", token, Duration::from_secs(5)).await?;
    if !response.status().is_success() {
        return Err(Error::Mqtt(format!(
            "Home Assistant core config {url}: HTTP {}",
            response.status().as_u16()
        )));
    }
    let config: CoreConfig = response
        .json()
        .await
        .map_err(|e| Error::Mqtt(format!("Home Assistant core config: {e}")))?;
    Ok(config
        .country
        .as_deref()
        .and_then(crate::event::vocab::country_code))
}

#[derive(Deserialize)]
struct SelfEnvelope {
    #[serde(default)]
    data: Option<SelfInfo>,
}

#[derive(Deserialize)]
struct SelfInfo {
    slug: String,
    #[serde(default)]
    ingress: bool,
}

/// This add-on's page in Home Assistant (`homeassistant://hassio/ingress/<installed slug>`),
/// from `GET /addons/self/info`, for the device's `configuration_url`.
pub async fn ingress_page_url(base_url: &str, token: &str) -> Result<Option<String>> {
    let (url, response) = get(base_url, "/addons/self/info", token, Duration::from_secs(5)).await?;
    if !response.status().is_success() {
        return Err(Error::Mqtt(format!(
            "Supervisor {url}: HTTP {}",
            response.status().as_u16()
        )));
    }
    let info: SelfEnvelope = response
        .json()
        .await
        .map_err(|e| Error::Mqtt(format!("Supervisor add-on info: {e}")))?;
    Ok(info
        .data
        .filter(|d| d.ingress && !d.slug.is_empty())
        .map(|d| format!("homeassistant://hassio/ingress/{}", d.slug)))
}

/// Asks until the Supervisor answers, backing off from 1 s to 60 s.
pub async fn wait_for(base_url: &str, token: &str) -> BrokerService {
    const BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut delay = BACKOFF.start;
    loop {
        match fetch(base_url, token).await {
            Ok(service) => return service,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "MQTT broker not available from the Supervisor yet; is the Mosquitto add-on installed and started?");
                tokio::time::sleep(delay).await;
                delay = BACKOFF.after(delay);
            }
        }
    }
}
