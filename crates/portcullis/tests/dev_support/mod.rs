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
    try_banner(child).expect("dev banner printed")
}

/// [`banner`], or `None` if dev exits (or stays silent for 30 s) first.
fn try_banner(child: &mut std::process::Child) -> Option<String> {
    let stdout = child.stdout.take()?;
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
    rx.recv_timeout(Duration::from_secs(30)).ok()
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

impl DevPorts {
    /// Every port free (see [`free_port`]).
    pub fn free() -> Self {
        DevPorts {
            iam: free_port(),
            admin: free_port(),
            gateway: free_port(),
            gateway_admin: free_port(),
            demo: free_port(),
            customers: free_port(),
            security: free_port(),
        }
    }

    /// `portcullis dev` with `data` listening on these ports (not started).
    pub fn command(&self, data: &std::path::Path) -> Command {
        let at = |p: u16| format!("127.0.0.1:{p}");
        let mut cmd = Command::new(BIN);
        cmd.args(["--log", "warn", "dev", "--data-dir"])
            .arg(data)
            .args(["--listen", &at(self.iam)])
            .args(["--admin-listen", &at(self.admin)])
            .args(["--gateway-listen", &at(self.gateway)])
            .args(["--gateway-admin-listen", &at(self.gateway_admin)])
            .args(["--demo-listen", &at(self.demo)])
            .args(["--customers-listen", &at(self.customers)])
            .args(["--security-listen", &at(self.security)]);
        cmd
    }
}

/// `portcullis dev` on free ports: the ports, and a function that starts
/// it (again) on those ports with `data`.
pub fn dev_on_free_ports(
    data: &std::path::Path,
) -> (DevPorts, impl Fn() -> std::process::Child + use<>) {
    let ports = DevPorts::free();
    let data = data.to_owned();
    let start = move || {
        ports
            .command(&data)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr_log(&data)).unwrap())
            .spawn()
            .unwrap()
    };
    (ports, start)
}

/// Where a test's `portcullis dev` writes its stderr (beside its data dir).
fn stderr_log(data: &std::path::Path) -> std::path::PathBuf {
    data.with_extension("stderr")
}

/// `portcullis dev` started on free ports and past its banner: the ports,
/// the restart function, the child and the banner. A port picked as free
/// can be taken by a parallel test before dev binds it; then dev exits
/// with "cannot listen on …" and is started again on other ports (at most
/// three times). Any other early exit fails with dev's stderr.
pub fn dev_started(
    data: &std::path::Path,
) -> (
    DevPorts,
    impl Fn() -> std::process::Child + use<>,
    KillOnDrop,
    String,
) {
    for attempt in 1..=3 {
        let (ports, start) = dev_on_free_ports(data);
        let mut child = KillOnDrop(start());
        if let Some(text) = try_banner(&mut child.0) {
            return (ports, start, child, text);
        }
        let _ = child.0.wait();
        let err = std::fs::read_to_string(stderr_log(data)).unwrap_or_default();
        if !(err.contains("cannot listen on") && attempt < 3) {
            panic!("portcullis dev did not start (attempt {attempt}); its stderr:\n{err}");
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// The `demo user     NAME / PASSWORD` lines of the banner, in order.
pub fn demo_users(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("demo user     "))
        .filter_map(|l| l.split_once(" / "))
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .collect()
}
