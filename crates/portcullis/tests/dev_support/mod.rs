//! Running `portcullis dev` from tests: on free ports, reading its banner,
//! killed when dropped.

#![allow(dead_code)]

use portcullis_test_support::free_port;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// Kills the child when dropped, so a failing assertion leaves no server behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the dev banner until its last line, with a deadline.
pub fn banner(child: &mut std::process::Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.contains("Stop with Ctrl-C");
            text.push_str(&line);
            text.push('\n');
            if done {
                let _ = tx.send(text);
                return;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("dev banner printed")
}

/// The ports of one `portcullis dev`.
#[derive(Clone, Copy)]
pub struct DevPorts {
    pub iam: u16,
    pub admin: u16,
    pub gateway: u16,
    pub gateway_admin: u16,
    pub demo: u16,
    pub customers: u16,
    pub security: u16,
}

/// `portcullis dev` on free ports: the ports, and a function that starts
/// it (again) on those ports with `data`.
pub fn dev_on_free_ports(
    data: &std::path::Path,
) -> (DevPorts, impl Fn() -> std::process::Child + use<>) {
    let ports = DevPorts {
        iam: free_port(),
        admin: free_port(),
        gateway: free_port(),
        gateway_admin: free_port(),
        demo: free_port(),
        customers: free_port(),
        security: free_port(),
    };
    let data = data.to_owned();
    let start = move || {
        let at = |p: u16| format!("127.0.0.1:{p}");
        Command::new(BIN)
            .args(["--log", "warn", "dev", "--data-dir", data.to_str().unwrap()])
            .args([
                "--listen",
                &at(ports.iam),
                "--admin-listen",
                &at(ports.admin),
            ])
            .args(["--gateway-listen", &at(ports.gateway)])
            .args(["--gateway-admin-listen", &at(ports.gateway_admin)])
            .args(["--demo-listen", &at(ports.demo)])
            .args(["--customers-listen", &at(ports.customers)])
            .args(["--security-listen", &at(ports.security)])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    (ports, start)
}

/// The `demo user     NAME / PASSWORD` lines of the banner, in order.
pub fn demo_users(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("demo user     "))
        .filter_map(|l| l.split_once(" / "))
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .collect()
}
