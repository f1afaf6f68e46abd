//! A grow room's PLC, simulated: a Modbus TCP server whose registers move like the equipment
//! behind them, so the demo and the tests have a PLC to poll and to write to.
//!
//! The register banks are laid out by a tag map. Tags the simulator knows by name follow simple
//! dynamics, evaluated every 100 ms from the values in the banks, so a write (a new setpoint, a
//! valve opened) changes what follows:
//! - `supply_temp` approaches `supply_setpoint` (first order, a minute's time constant);
//! - `co2_ppm` rises while `co2_valve_open`, otherwise decays toward outdoor air (420 ppm);
//! - `rh_pct` falls while `dehumidifier_on`, otherwise creeps up;
//! - `hvac_run_hours` counts hours since start; `hvac_model` names the unit.
//!
//! Other tags hold what was last written (or 0).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

use super::codec::{RawValue, decode_registers, encode_registers};
use super::tags::{Register, Tag, TagMap, ValueType};

/// The four data areas, sized to the highest address the map uses.
#[derive(Debug, Default)]
struct Banks {
    coils: Vec<bool>,
    discrete: Vec<bool>,
    holding: Vec<u16>,
    input: Vec<u16>,
}

impl Banks {
    fn for_map(map: &TagMap) -> Banks {
        let mut banks = Banks::default();
        for tag in &map.tags {
            let end = usize::from(tag.address) + usize::from(tag.value_type.width());
            match tag.register {
                Register::Coil => grow(&mut banks.coils, end),
                Register::Discrete => grow(&mut banks.discrete, end),
                Register::Holding => grow(&mut banks.holding, end),
                Register::Input => grow(&mut banks.input, end),
            }
        }
        banks
    }

    fn words(&self, register: Register) -> &Vec<u16> {
        match register {
            Register::Holding => &self.holding,
            _ => &self.input,
        }
    }

    fn bits(&self, register: Register) -> &Vec<bool> {
        match register {
            Register::Coil => &self.coils,
            _ => &self.discrete,
        }
    }
}

fn grow<T: Default + Clone>(bank: &mut Vec<T>, len: usize) {
    if bank.len() < len {
        bank.resize(len, T::default());
    }
}

/// The simulated room: its tag map and register banks.
pub struct GrowRoom {
    map: Arc<TagMap>,
    banks: Mutex<Banks>,
    /// The room's physical state, continuous (the registers hold it quantised, e.g. in tenths).
    physics: Mutex<Physics>,
    started: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Physics {
    supply_temp: f64,
    co2_ppm: f64,
    rh_pct: f64,
}

impl GrowRoom {
    pub fn new(map: Arc<TagMap>) -> Arc<GrowRoom> {
        let room = GrowRoom {
            banks: Mutex::new(Banks::for_map(&map)),
            map,
            physics: Mutex::new(Physics {
                supply_temp: 24.0,
                co2_ppm: 600.0,
                rh_pct: 65.0,
            }),
            started: Instant::now(),
        };
        for (name, value) in [
            ("supply_setpoint", RawValue::Float(22.0)),
            ("supply_temp", RawValue::Float(24.0)),
            ("co2_ppm", RawValue::Float(600.0)),
            ("rh_pct", RawValue::Float(65.0)),
            ("light_pct", RawValue::Float(100.0)),
            ("hvac_model", RawValue::Text("VLX-HVAC".into())),
        ] {
            room.set(name, &value);
        }
        Arc::new(room)
    }

    fn banks(&self) -> std::sync::MutexGuard<'_, Banks> {
        self.banks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tag(&self, name: &str) -> Option<&Tag> {
        self.map.tags.iter().find(|tag| tag.name == name)
    }

    /// A tag's engineering value (after scale and offset), if the map has it.
    pub fn get(&self, name: &str) -> Option<f64> {
        let tag = self.tag(name)?;
        let banks = self.banks();
        let from = usize::from(tag.address);
        let raw = if tag.register.is_bits() {
            RawValue::Bool(banks.bits(tag.register)[from])
        } else {
            let to = from + usize::from(tag.value_type.width());
            decode_registers(tag, &banks.words(tag.register)[from..to])
        };
        raw.number().map(|raw| tag.engineering(raw))
    }

    /// Sets a tag to an engineering value (or text); tags not in the map are ignored.
    pub fn set(&self, name: &str, value: &RawValue) {
        let Some(tag) = self.tag(name) else { return };
        let raw = match (value, tag.value_type) {
            (RawValue::Text(_), _) => value.clone(),
            (_, ValueType::Float32 | ValueType::Float64) => {
                RawValue::Float((value.number().unwrap_or(0.0) - tag.offset) / tag.scale)
            }
            _ => {
                RawValue::Float(((value.number().unwrap_or(0.0) - tag.offset) / tag.scale).round())
            }
        };
        let mut banks = self.banks();
        let from = usize::from(tag.address);
        if tag.register.is_bits() {
            let bank = match tag.register {
                Register::Coil => &mut banks.coils,
                _ => &mut banks.discrete,
            };
            bank[from] = raw.number().unwrap_or(0.0) != 0.0;
            return;
        }
        let Ok(words) = encode_registers(tag, &raw) else {
            return;
        };
        let bank = match tag.register {
            Register::Holding => &mut banks.holding,
            _ => &mut banks.input,
        };
        bank[from..from + words.len()].copy_from_slice(&words);
    }

    /// Advances the dynamics by `dt`.
    pub fn step(&self, dt: Duration) {
        let seconds = dt.as_secs_f64();
        let mut physics = *self.physics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(setpoint) = self.get("supply_setpoint") {
            physics.supply_temp += (setpoint - physics.supply_temp) * (seconds / 60.0).min(1.0);
        }
        physics.co2_ppm = if self.get("co2_valve_open").unwrap_or(0.0) != 0.0 {
            (physics.co2_ppm + 8.0 * seconds).min(2500.0)
        } else {
            physics.co2_ppm + (420.0 - physics.co2_ppm) * (seconds / 300.0).min(1.0)
        };
        physics.rh_pct = if self.get("dehumidifier_on").unwrap_or(0.0) != 0.0 {
            (physics.rh_pct - 0.05 * seconds).max(35.0)
        } else {
            (physics.rh_pct + 0.01 * seconds).min(90.0)
        };
        *self.physics.lock().unwrap_or_else(|p| p.into_inner()) = physics;
        self.set("supply_temp", &RawValue::Float(physics.supply_temp));
        self.set("co2_ppm", &RawValue::Float(physics.co2_ppm));
        self.set("rh_pct", &RawValue::Float(physics.rh_pct));
        let hours = self.started.elapsed().as_secs_f64() / 3600.0;
        self.set("hvac_run_hours", &RawValue::Float(hours.floor()));
    }

    /// Answers one Modbus request from the banks.
    fn answer(&self, request: Request<'_>) -> Result<Response, ExceptionCode> {
        let mut banks = self.banks();
        let slice = |len: usize, start: u16, count: u16| {
            let (start, end) = (usize::from(start), usize::from(start) + usize::from(count));
            if count == 0 || end > len {
                Err(ExceptionCode::IllegalDataAddress)
            } else {
                Ok(start..end)
            }
        };
        Ok(match request {
            Request::ReadCoils(start, count) => {
                Response::ReadCoils(banks.coils[slice(banks.coils.len(), start, count)?].to_vec())
            }
            Request::ReadDiscreteInputs(start, count) => Response::ReadDiscreteInputs(
                banks.discrete[slice(banks.discrete.len(), start, count)?].to_vec(),
            ),
            Request::ReadHoldingRegisters(start, count) => Response::ReadHoldingRegisters(
                banks.holding[slice(banks.holding.len(), start, count)?].to_vec(),
            ),
            Request::ReadInputRegisters(start, count) => Response::ReadInputRegisters(
                banks.input[slice(banks.input.len(), start, count)?].to_vec(),
            ),
            Request::WriteSingleCoil(address, on) => {
                let range = slice(banks.coils.len(), address, 1)?;
                banks.coils[range].fill(on);
                Response::WriteSingleCoil(address, on)
            }
            Request::WriteMultipleCoils(start, values) => {
                let range = slice(banks.coils.len(), start, values.len() as u16)?;
                banks.coils[range].copy_from_slice(&values);
                Response::WriteMultipleCoils(start, values.len() as u16)
            }
            Request::WriteSingleRegister(address, word) => {
                let range = slice(banks.holding.len(), address, 1)?;
                banks.holding[range].fill(word);
                Response::WriteSingleRegister(address, word)
            }
            Request::WriteMultipleRegisters(start, words) => {
                let range = slice(banks.holding.len(), start, words.len() as u16)?;
                banks.holding[range].copy_from_slice(&words);
                Response::WriteMultipleRegisters(start, words.len() as u16)
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// One connection's view of the room.
struct Connection {
    room: Arc<GrowRoom>,
    unit_id: u8,
}

impl Service for Connection {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        // A request for another unit is not ours: no answer, as on a shared line.
        if request.slave != self.unit_id {
            return std::future::ready(Ok(None));
        }
        std::future::ready(self.room.answer(request.request).map(Some))
    }
}

/// Serves the room on `listener` (with its dynamics) until the future is dropped.
pub async fn serve(room: Arc<GrowRoom>, listener: tokio::net::TcpListener, unit_id: u8) {
    let stepping = {
        let room = room.clone();
        async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            let mut last = Instant::now();
            loop {
                ticks.tick().await;
                let now = Instant::now();
                room.step(now - last);
                last = now;
            }
        }
    };
    let server = Server::new(listener);
    let on_connected = |stream, address: SocketAddr| {
        let room = room.clone();
        async move {
            accept_tcp_connection(stream, address, move |_| {
                Ok(Some(Connection {
                    room: room.clone(),
                    unit_id,
                }))
            })
        }
    };
    let on_error = |error| tracing::debug!(%error, "plc simulator connection ended");
    tokio::select! {
        _ = stepping => {}
        result = server.serve(&on_connected, on_error) => {
            if let Err(error) = result {
                tracing::error!(%error, "plc simulator stopped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> Arc<GrowRoom> {
        let map = TagMap::parse(
            include_str!("../../../examples/plc/room1.toml"),
            Duration::from_secs(1),
        )
        .unwrap();
        GrowRoom::new(Arc::new(map))
    }

    #[test]
    fn the_supply_temperature_follows_a_written_setpoint() {
        let room = room();
        assert_eq!(room.get("supply_temp"), Some(24.0));
        room.set("supply_setpoint", &RawValue::Float(18.0));
        for _ in 0..600 {
            room.step(Duration::from_millis(100));
        }
        let temp = room.get("supply_temp").unwrap();
        assert!((18.0..20.5).contains(&temp), "{temp}");
    }

    #[test]
    fn co2_rises_while_the_valve_is_open() {
        let room = room();
        let before = room.get("co2_ppm").unwrap();
        room.set("co2_valve_open", &RawValue::Bool(true));
        room.step(Duration::from_secs(10));
        assert!(room.get("co2_ppm").unwrap() > before + 50.0);
    }

    #[test]
    fn requests_beyond_the_map_are_illegal_addresses() {
        let room = room();
        let answer = room.answer(Request::ReadHoldingRegisters(0, 200));
        assert_eq!(answer.unwrap_err(), ExceptionCode::IllegalDataAddress);
        let answer = room.answer(Request::ReadInputRegisters(10, 4)).unwrap();
        let Response::ReadInputRegisters(words) = answer else {
            panic!()
        };
        assert_eq!(words[0], u16::from_be_bytes(*b"VL"));
    }
}
