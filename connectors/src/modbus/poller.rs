//! Polling one device: each poll group on its own interval, every read bounded by a timeout.
//!
//! A device runs on a thread of its own, so a device that is down or slow delays nobody else.
//! A timeout or transport error drops the connection before the next request: a Modbus TCP
//! response that arrives late would otherwise be taken for the answer to the next request
//! (the failure of grid-x/modbus #78). An exception reply leaves the connection up: the device
//! answered, it refused. Failed reads are retried (on a fresh connection) before their tags
//! are reported `bad` with the reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_modbus::client::{Client, Context, Reader};
use tokio_modbus::prelude::Slave;

use super::codec::{RawValue, decode_registers};
use super::plan::{Limits, ReadRequest, plan};
use super::tags::{Register, TagMap};

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The name rows carry in `device`.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub unit_id: u8,
    pub tags: Arc<TagMap>,
    /// The file the tag map came from (`None`: given inline).
    pub tags_file: Option<std::path::PathBuf>,
    pub limits: Limits,
    /// How long one request (or connecting) may take.
    pub timeout: Duration,
    /// Further attempts after a failed read, each on a new connection.
    pub retries: u32,
    /// A pause between requests, for devices that need one.
    pub pause: Duration,
    /// Close the connection after every poll (devices that hold few connections).
    pub close_after_poll: bool,
    /// Poll a simulated grow-room PLC started in-process (on a loopback port) by this tag
    /// map, instead of `host`/`port`.
    pub simulate: bool,
}

/// How far a reading can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Good,
    /// The read failed (see the reading's error) and there is no earlier value to fall back on,
    /// or the device refused the read with an exception reply.
    Bad,
    /// The device could not be reached (timeout, I/O error): the value is the last good one.
    Stale,
}

impl Quality {
    pub fn name(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Bad => "bad",
            Quality::Stale => "stale",
        }
    }
}

/// One tag's result of one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Index of the tag in the map.
    pub tag: usize,
    /// When the poll ran (nanoseconds since the epoch).
    pub polled_at: i64,
    pub raw: Option<RawValue>,
    pub quality: Quality,
    pub error: Option<String>,
}

/// The device's state after a poll, for `<source>_health`.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub polled_at: i64,
    /// Every request of the poll reached the device (exception replies included).
    pub connected: bool,
    /// When a poll last reached the device (nanoseconds since the epoch).
    pub last_success: Option<i64>,
    /// Polls in a row that could not reach the device.
    pub failures: u64,
    /// Requests that failed since the source started.
    pub errors_total: u64,
    /// The last failure of this poll.
    pub error: Option<String>,
}

/// One poll's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct PollResult {
    pub readings: Vec<Reading>,
    pub health: Health,
}

/// Why a read failed.
enum Failure {
    /// The device answered with an exception: the connection is fine.
    Exception(String),
    /// Timeout or transport error: the connection cannot be trusted any more.
    Connection(String),
}

struct Group {
    every: Duration,
    due: Instant,
    requests: Vec<ReadRequest>,
}

/// The device's poller; `deliver` receives each poll's readings and the device's health.
pub struct Poller<F: FnMut(PollResult)> {
    config: DeviceConfig,
    address: Option<SocketAddr>,
    context: Option<Context>,
    /// No new connection attempt before this (backoff after failures).
    reconnect_at: Instant,
    backoff: Duration,
    /// The last value reported per tag, for deadbands.
    reported: Vec<Option<(Quality, Option<f64>)>>,
    /// The last good value read per tag, carried by `stale` readings.
    last_good: Vec<Option<RawValue>>,
    last_success: Option<i64>,
    failures: u64,
    errors_total: u64,
    deliver: F,
}

impl<F: FnMut(PollResult)> Poller<F> {
    pub fn new(config: DeviceConfig, deliver: F) -> Self {
        let tags = config.tags.tags.len();
        Poller {
            config,
            address: None,
            context: None,
            reconnect_at: Instant::now(),
            backoff: Duration::from_millis(100),
            reported: vec![None; tags],
            last_good: vec![None; tags],
            last_success: None,
            failures: 0,
            errors_total: 0,
            deliver,
        }
    }

    /// Polls until `stop` says so.
    pub async fn run(&mut self, stop: impl Fn() -> bool) {
        let now = Instant::now();
        let mut groups: Vec<Group> = self
            .config
            .tags
            .groups
            .iter()
            .map(|(name, every)| {
                let members: Vec<usize> = (0..self.config.tags.tags.len())
                    .filter(|&index| self.config.tags.tags[index].group == *name)
                    .collect();
                Group {
                    every: *every,
                    due: now,
                    requests: plan(&self.config.tags.tags, &members, self.config.limits),
                }
            })
            .filter(|group| !group.requests.is_empty())
            .collect();
        while !stop() {
            let next = groups.iter().map(|group| group.due).min().unwrap_or(now);
            let wait = next.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
                continue;
            }
            for group in groups
                .iter_mut()
                .filter(|group| group.due <= Instant::now())
            {
                let result = self.poll(&group.requests).await;
                (self.deliver)(result);
                // The next poll is due an interval after this one was; a poll that overran
                // skips the missed slots rather than bursting.
                group.due += group.every;
                if group.due < Instant::now() {
                    group.due = Instant::now() + group.every;
                }
            }
            if self.config.close_after_poll {
                self.disconnect().await;
            }
        }
        self.disconnect().await;
    }

    async fn disconnect(&mut self) {
        if let Some(mut context) = self.context.take() {
            let _ = tokio::time::timeout(Duration::from_millis(200), context.disconnect()).await;
        }
    }

    /// Reads every request of a group; returns the readings to report and the health.
    async fn poll(&mut self, requests: &[ReadRequest]) -> PollResult {
        let polled_at = now_nanos();
        let mut readings = Vec::new();
        let mut reached = true;
        let mut last_error = None;
        for (position, request) in requests.iter().enumerate() {
            if position > 0 && !self.config.pause.is_zero() {
                tokio::time::sleep(self.config.pause).await;
            }
            let mut attempt = 0;
            let outcome = loop {
                match self.read(request).await {
                    Ok(values) => break Ok(values),
                    Err(Failure::Exception(problem)) => break Err((problem, false)),
                    Err(Failure::Connection(problem)) => {
                        self.disconnect().await;
                        if attempt >= self.config.retries || Instant::now() < self.reconnect_at {
                            break Err((problem, true));
                        }
                        attempt += 1;
                    }
                }
            };
            match outcome {
                Ok(values) => {
                    for &index in &request.tags {
                        let raw = self.decode(index, request, &values);
                        self.last_good[index] = Some(raw.clone());
                        readings.push(Reading {
                            tag: index,
                            polled_at,
                            raw: Some(raw),
                            quality: Quality::Good,
                            error: None,
                        });
                    }
                }
                Err((problem, unreachable)) => {
                    self.errors_total += 1;
                    reached &= !unreachable;
                    last_error = Some(problem.clone());
                    readings.extend(request.tags.iter().map(|&index| {
                        let last = self.last_good[index].clone().filter(|_| unreachable);
                        Reading {
                            tag: index,
                            polled_at,
                            quality: if last.is_some() {
                                Quality::Stale
                            } else {
                                Quality::Bad
                            },
                            raw: last,
                            error: Some(problem.clone()),
                        }
                    }));
                }
            }
        }
        readings.retain(|reading| self.worth_reporting(reading));
        if reached {
            self.last_success = Some(polled_at);
            self.failures = 0;
        } else {
            self.failures += 1;
        }
        PollResult {
            readings,
            health: Health {
                polled_at,
                connected: reached,
                last_success: self.last_success,
                failures: self.failures,
                errors_total: self.errors_total,
                error: last_error,
            },
        }
    }

    /// Report by exception: a good value within the tag's deadband of the last one reported
    /// (with the same quality) is left out.
    fn worth_reporting(&mut self, reading: &Reading) -> bool {
        let tag = &self.config.tags.tags[reading.tag];
        let value = reading
            .raw
            .as_ref()
            .and_then(RawValue::number)
            .map(|raw| tag.engineering(raw));
        let last = self.reported[reading.tag];
        let within = match (tag.deadband, last, value) {
            (Some(deadband), Some((quality, Some(before))), Some(now)) => {
                quality == reading.quality && (now - before).abs() <= deadband
            }
            _ => false,
        };
        if !within {
            self.reported[reading.tag] = Some((reading.quality, value));
        }
        !within
    }

    fn decode(&self, index: usize, request: &ReadRequest, values: &Values) -> RawValue {
        let tag = &self.config.tags.tags[index];
        let from = usize::from(tag.address - request.start);
        match values {
            Values::Bits(bits) => RawValue::Bool(bits.get(from).copied().unwrap_or(false)),
            Values::Words(words) => {
                let to = from + usize::from(tag.value_type.width());
                decode_registers(tag, &words[from..to.min(words.len())])
            }
        }
    }

    async fn connect(&mut self) -> Result<&mut Context, Failure> {
        if self.context.is_none() {
            if Instant::now() < self.reconnect_at {
                return Err(Failure::Connection(format!(
                    "not connected ({}:{} is being retried)",
                    self.config.host, self.config.port
                )));
            }
            let address = match self.address {
                Some(address) => address,
                None => {
                    let target = format!("{}:{}", self.config.host, self.config.port);
                    let resolved = tokio::net::lookup_host(target.as_str())
                        .await
                        .ok()
                        .and_then(|mut found| found.next());
                    match resolved {
                        Some(address) => *self.address.insert(address),
                        None => return Err(self.failed_connect(format!("cannot resolve {target}"))),
                    }
                }
            };
            let connecting =
                tokio_modbus::client::tcp::connect_slave(address, Slave(self.config.unit_id));
            match tokio::time::timeout(self.config.timeout, connecting).await {
                Ok(Ok(context)) => {
                    self.backoff = Duration::from_millis(100);
                    self.context = Some(context);
                }
                Ok(Err(error)) => {
                    return Err(self.failed_connect(format!("connecting to {address}: {error}")));
                }
                Err(_) => {
                    return Err(self.failed_connect(format!(
                        "connecting to {address}: no answer within {:?}",
                        self.config.timeout
                    )));
                }
            }
        }
        Ok(self.context.as_mut().expect("connected"))
    }

    fn failed_connect(&mut self, problem: String) -> Failure {
        self.reconnect_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(10));
        Failure::Connection(problem)
    }

    async fn read(&mut self, request: &ReadRequest) -> Result<Values, Failure> {
        let timeout = self.config.timeout;
        let context = self.connect().await?;
        let (start, count) = (request.start, request.count);
        let reading = async {
            Ok::<_, tokio_modbus::Error>(match request.register {
                Register::Coil => context.read_coils(start, count).await?.map(Values::Bits),
                Register::Discrete => context
                    .read_discrete_inputs(start, count)
                    .await?
                    .map(Values::Bits),
                Register::Holding => context
                    .read_holding_registers(start, count)
                    .await?
                    .map(Values::Words),
                Register::Input => context
                    .read_input_registers(start, count)
                    .await?
                    .map(Values::Words),
            })
        };
        let what = format!(
            "{} {start}..{}",
            request.register.name(),
            u32::from(start) + u32::from(count)
        );
        match tokio::time::timeout(timeout, reading).await {
            Ok(Ok(Ok(values))) => Ok(values),
            Ok(Ok(Err(exception))) => Err(Failure::Exception(format!(
                "reading {what}: exception {exception}"
            ))),
            Ok(Err(error)) => Err(Failure::Connection(format!("reading {what}: {error}"))),
            Err(_) => Err(Failure::Connection(format!(
                "reading {what}: no answer within {timeout:?}"
            ))),
        }
    }
}

enum Values {
    Bits(Vec<bool>),
    Words(Vec<u16>),
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as i64)
        .unwrap_or(0)
}
