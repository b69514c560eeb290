//! Life on an edge host: telling systemd when the gateway is ready, and the
//! binary upgrade that hands the listening sockets to a new process.
//!
//! The upgrade is Pingora's: a process started with `run --upgrade` waits on
//! `Settings.upgradeSocket` for the listening sockets, and the old process
//! sends them there on SIGQUIT, keeps accepting for five seconds, then
//! drains for `drainPeriod` and exits. Both processes share the very same
//! sockets, so no connection is refused in between.
//!
//! SIGUSR2 does the whole dance from inside, for service managers that
//! cannot start a second process themselves: the gateway starts its own
//! binary (the path it was started from, so a freshly installed file) with
//! `--upgrade`, waits until that process listens on the upgrade socket, and
//! only then sends itself SIGQUIT. If the new process fails first, nothing
//! changes and the old one keeps serving.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

/// How long a new process gets to load its config, fetch its key sets and
/// start listening on the upgrade socket.
const UPGRADE_START_LIMIT: Duration = Duration::from_secs(60);

/// Sends `READY=1` (and `MAINPID`, for a process started by an upgrade) to
/// systemd's `NOTIFY_SOCKET` once every listener accepts connections.
/// Without `NOTIFY_SOCKET` it does nothing.
pub struct SystemdNotify {
    pub listeners: Vec<String>,
}

#[async_trait]
impl BackgroundService for SystemdNotify {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        let targets: Vec<SocketAddr> = self
            .listeners
            .iter()
            .filter_map(|a| a.parse().ok())
            .map(loopback_for)
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !targets.iter().all(|a| accepts(*a)) {
            if tokio::time::Instant::now() > deadline {
                tracing::error!(listeners = ?self.listeners, "listeners not accepting after 30 s; not telling systemd we are ready");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let message = format!(
            "READY=1\nMAINPID={}\nSTATUS=serving {} listeners\n",
            std::process::id(),
            targets.len()
        );
        match notify(&socket, &message) {
            Ok(()) => tracing::info!("told systemd we are ready"),
            Err(error) => tracing::warn!(%error, "cannot notify systemd"),
        }
    }
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A wildcard listen address is reached on the loopback of its family.
fn loopback_for(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// One datagram to `$NOTIFY_SOCKET`: a path, or `@name` for an abstract
/// socket.
fn notify(socket: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::from_abstract_name(name)?,
        None => UnixAddr::from_pathname(PathBuf::from(socket))?,
    };
    let datagram = UnixDatagram::unbound()?;
    datagram.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

/// On SIGUSR2, starts the new binary with `--upgrade` and hands the
/// sockets over to it (see the module documentation).
pub struct UpgradeOnSignal {
    /// The binary, resolved at start: `/usr/local/bin/claimgate`, not
    /// `/proc/self/exe`, which still names the old, replaced file.
    exe: PathBuf,
    args: Vec<OsString>,
    socket: PathBuf,
}

impl UpgradeOnSignal {
    /// The command line this process was started with, made absolute.
    pub fn new(socket: PathBuf) -> Option<UpgradeOnSignal> {
        let mut argv = std::env::args_os();
        let exe = argv.next()?;
        let exe = which(PathBuf::from(exe))?;
        let mut args: Vec<OsString> = argv.filter(|a| a != "--upgrade").collect();
        args.push("--upgrade".into());
        Some(UpgradeOnSignal { exe, args, socket })
    }

    async fn upgrade(&self) {
        // A stale socket file would look like a new process listening.
        let _ = std::fs::remove_file(&self.socket);
        let mut child = match std::process::Command::new(&self.exe)
            .args(&self.args)
            .spawn()
        {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(exe = %self.exe.display(), %error, "upgrade: cannot start the new process; still serving");
                return;
            }
        };
        let pid = child.id();
        tracing::info!(exe = %self.exe.display(), pid, "upgrade: started the new process, waiting for it to ask for the sockets");
        let deadline = tokio::time::Instant::now() + UPGRADE_START_LIMIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                tracing::error!(pid, %status, "upgrade: the new process exited; still serving");
                return;
            }
            if self.socket.exists() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                tracing::error!(pid, "upgrade: the new process did not ask for the sockets in time; stopping it, still serving");
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(pid, "upgrade: handing the sockets over");
        // Pingora's SIGQUIT handler does the hand-over. The new process
        // outlives us and is reaped by whoever inherits it.
        let me = rustix::process::getpid();
        if let Err(error) = rustix::process::kill_process(me, rustix::process::Signal::QUIT) {
            tracing::error!(%error, "upgrade: cannot signal ourselves; stopping the new process, still serving");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `path` as an absolute file name: as given when it names a file,
/// otherwise looked up in `PATH`.
fn which(path: PathBuf) -> Option<PathBuf> {
    if path.components().count() > 1 {
        return std::fs::canonicalize(path).ok();
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(&path))
        .find(|candidate| candidate.is_file())
}

#[async_trait]
impl BackgroundService for UpgradeOnSignal {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr2 = match signal(SignalKind::user_defined2()) {
            Ok(s) => s,
            Err(error) => {
                tracing::error!(%error, "cannot handle SIGUSR2; upgrade with run --upgrade and SIGQUIT");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = usr2.recv() => self.upgrade().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:80".parse().unwrap();
        assert_eq!(loopback_for(v4), "127.0.0.1:80".parse().unwrap());
        let v6: SocketAddr = "[::]:443".parse().unwrap();
        assert_eq!(loopback_for(v6), "[::1]:443".parse().unwrap());
        let set: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        assert_eq!(loopback_for(set), set);
    }

    #[test]
    fn notify_sends_one_datagram_to_a_path_and_to_an_abstract_socket() {
        use std::os::unix::net::UnixDatagram;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        notify(path.as_os_str(), "READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("claimgate-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        notify(std::ffi::OsStr::new(&format!("@{name}")), "READY=1\n").unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }
}
