//! Modbus TCP peers for the Modbus tests: a pymodbus server (a device no one here wrote) with
//! its tag map, and a device that accepts connections and never answers.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The tag map of the pymodbus server's registers (`tests/peers/modbus_server.py`).
pub const TAGS: &str = r#"
[groups]
fast = "100ms"

[[tag]]
name = "i16"
register = "holding"
address = 0
type = "int16"
group = "fast"

[[tag]]
name = "u16"
register = "holding"
address = 1
type = "uint16"
group = "fast"

[[tag]]
name = "i32"
register = "holding"
address = 2
type = "int32"
group = "fast"

[[tag]]
name = "u32_dcba"
register = "holding"
address = 4
type = "uint32"
byte_order = "DCBA"
group = "fast"

[[tag]]
name = "f32_badc"
register = "holding"
address = 6
type = "float32"
byte_order = "BADC"
group = "fast"

[[tag]]
name = "f32_cdab"
register = "holding"
address = 8
type = "float32"
byte_order = "CDAB"
group = "fast"

[[tag]]
name = "i64"
register = "holding"
address = 10
type = "int64"
group = "fast"

[[tag]]
name = "u64_cdab"
register = "holding"
address = 14
type = "uint64"
byte_order = "CDAB"
group = "fast"

[[tag]]
name = "f64_dcba"
register = "holding"
address = 18
type = "float64"
byte_order = "DCBA"
group = "fast"

[[tag]]
name = "label"
register = "holding"
address = 22
type = "string(4)"
group = "fast"

[[tag]]
name = "supply_temp"
register = "holding"
address = 30
scale = 0.1
unit = "°C"
group = "fast"

[[tag]]
name = "co2_ppm"
register = "input"
address = 0
group = "fast"

[[tag]]
name = "fan_on"
register = "coil"
address = 0
group = "fast"

[[tag]]
name = "valve_open"
register = "coil"
address = 1
group = "fast"

[[tag]]
name = "door_closed"
register = "discrete"
address = 0
group = "fast"

[[tag]]
name = "missing"
register = "holding"
address = 500
group = "fast"
"#;

/// The pymodbus server (`tests/peers/modbus_server.py`); killed when dropped.
pub struct Server {
    child: Child,
}

impl Server {
    pub fn start(port: u16) -> Server {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/modbus_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (scripts/test.sh installs pymodbus)");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        Server { child }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device that accepts connections and then says nothing at all; returns its port.
pub fn start_silent_device() -> u16 {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    port
}

/// Writes a tag map of one scaled holding register, `name` at address 30, into `dir`; returns
/// its path.
pub fn write_one_tag_map(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("[[tag]]\nname = \"{name}\"\nregister = \"holding\"\naddress = 30\nscale = 0.1\n"),
    )
    .unwrap();
    path
}
