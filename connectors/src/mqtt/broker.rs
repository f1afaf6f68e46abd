//! Where the broker is and how to log in: the options source and sink share.

use std::time::Duration;

pub use rumqttc::QoS;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

/// A broker connection as declared in `WITH (…)`.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    pub host: String,
    pub port: u16,
    /// Stable across restarts, so the broker finds the session again.
    pub client_id: String,
    /// `false` (the default) keeps the session, and the messages queued for it, while the
    /// engine is away.
    pub clean_session: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    /// `mqtts://`: TLS, with these files (PEM).
    pub tls: Option<TlsFiles>,
}

/// Certificates for a TLS connection, as PEM files.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsFiles {
    /// The CA that signed the broker's certificate; `None` trusts the system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate and its key, for brokers that authenticate clients by certificate.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl BrokerConfig {
    /// Reads `mqtt://host:port` (or `tcp://`; the port defaults to 1883) and `mqtts://host:port`
    /// (or `ssl://`; TLS, port 8883 by default): host, port, and whether it is TLS.
    pub fn parse_url(url: &str) -> Result<(String, u16, bool), String> {
        let trimmed = url.trim();
        let (rest, tls) = if let Some(rest) = trimmed
            .strip_prefix("mqtt://")
            .or_else(|| trimmed.strip_prefix("tcp://"))
        {
            (rest, false)
        } else if let Some(rest) = trimmed
            .strip_prefix("mqtts://")
            .or_else(|| trimmed.strip_prefix("ssl://"))
        {
            (rest, true)
        } else {
            return Err(format!(
                "expected a URL such as 'mqtt://127.0.0.1:1883', found {url:?}"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("expected a port number in {url:?}, found {port:?}"))?,
            ),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("expected a host in {url:?}"));
        }
        Ok((host.to_string(), port, tls))
    }

    pub fn address(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// The TLS transport, from the certificate files (read now, so a missing file is an error
    /// at start rather than a reconnect loop).
    pub(crate) fn transport(tls: &TlsFiles) -> Result<Transport, String> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|error| format!("reading {}: {error}", path.display()))
        };
        if tls.ca.is_none() && tls.client.is_none() {
            return Ok(Transport::tls_with_config(TlsConfiguration::Rustls(
                std::sync::Arc::new(Self::system_roots_config()?),
            )));
        }
        let ca = match &tls.ca {
            Some(path) => read(path)?,
            None => return Err("a client certificate needs `tls_ca` as well".to_string()),
        };
        let client_auth = match &tls.client {
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
            None => None,
        };
        Ok(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }))
    }

    /// Trusts the system's root certificates (Debian: `ca-certificates`). Unreadable ones are
    /// skipped; none at all is an error that says what to do.
    fn system_roots_config() -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(format!(
                "no system root certificates could be loaded ({} problems); install ca-certificates or give the broker's CA with tls_ca",
                found.errors.len()
            ));
        }
        Ok(rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth())
    }

    pub(crate) fn client_options(&self, manual_acks: bool) -> Result<MqttOptions, String> {
        let mut options = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_session(self.clean_session)
            .set_manual_acks(manual_acks)
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_inflight(1000)
            .set_request_channel_capacity(4096);
        if let Some(username) = &self.username {
            options.set_credentials(username.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Self::transport(tls)?);
        }
        Ok(options)
    }
}

/// Parses `qos = '0' | '1'`. QoS 2 costs a second round trip per message for a guarantee the
/// source already gives (rows are keyed by time and sensor, and views tolerate a redelivery).
pub fn parse_qos(text: &str) -> Result<QoS, String> {
    match text.trim() {
        "0" => Ok(QoS::AtMostOnce),
        "1" => Ok(QoS::AtLeastOnce),
        other => Err(format!("expected 0 or 1, found {other:?}")),
    }
}

/// Waits between reconnection attempts: doubling from 100 ms up to 5 s, back to the start once
/// a connection is accepted.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MOST: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// How long to wait now; the wait after it is longer.
    pub fn step(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MOST);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_and_port() {
        assert_eq!(
            BrokerConfig::parse_url("mqtt://127.0.0.1:1884").unwrap(),
            ("127.0.0.1".to_string(), 1884, false)
        );
        assert_eq!(
            BrokerConfig::parse_url("tcp://broker.local").unwrap(),
            ("broker.local".to_string(), 1883, false)
        );
        assert_eq!(
            BrokerConfig::parse_url("mqtts://broker.local").unwrap(),
            ("broker.local".to_string(), 8883, true)
        );
        assert!(BrokerConfig::parse_url("http://x").is_err());
        assert!(
            BrokerConfig::parse_url("mqtt://x:port")
                .unwrap_err()
                .contains("port")
        );
    }

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets() {
        let mut backoff = Backoff::new();
        let waits: Vec<_> = (0..8).map(|_| backoff.step().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.step().as_millis(), 100);
    }
}
