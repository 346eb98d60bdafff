//! A real OpenSSH server for the SFTP tests: `/usr/sbin/sshd` (Debian `openssh-server`, which
//! `.ci/run` installs) on 127.0.0.1 and a free port, with a throwaway host key, its own
//! configuration (`Subsystem sftp internal-sftp`, no PAM, `AuthorizedKeysFile` in its temporary
//! directory) and the log on stderr. Without sshd the tests that need it are skipped (with a
//! note on stderr) — except under CI (`CI` set), where they fail.
//!
//! Public-key logins use the user running the tests. Password logins need an account with a
//! password: when the tests run as root, [`password_user`] makes a system account for them
//! (`ferry-sftp-test`, no home, shell `nologin`, a random password set once per test process).
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

/// Where Debian's openssh-server puts the daemon.
pub const SSHD: &str = "/usr/sbin/sshd";
/// The account password logins use.
pub const PASSWORD_USER: &str = "ferry-sftp-test";

/// Whether sshd and ssh-keygen are there. Outside CI a missing sshd prints a note and answers
/// false; under CI it fails the test.
pub fn sshd_available() -> bool {
    let present = Path::new(SSHD).is_file()
        && std::process::Command::new("ssh-keygen")
            .arg("-?")
            .output()
            .is_ok();
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "{SSHD} and ssh-keygen are required under CI (apt-get install openssh-server)"
        );
        eprintln!(
            "skipped: {SSHD} is missing (apt-get install openssh-server to run the SFTP tests)"
        );
    }
    present
}

fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Makes a key pair at `path` (and `path.pub`) without a passphrase.
pub fn keygen(path: &Path, kind: &str) {
    let mut cmd = std::process::Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", "", "-C", "ferry-test", "-f"])
        .arg(path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    run(&mut cmd);
}

/// The `SHA256:…` fingerprint of a public key file, as `ssh-keygen -lf` prints it.
pub fn fingerprint(public_key: &Path) -> String {
    let out = run(std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key));
    out.split_whitespace().nth(1).unwrap().to_string()
}

/// The name of the user running the tests.
pub fn current_user() -> String {
    run(std::process::Command::new("id").arg("-un"))
        .trim()
        .to_string()
}

fn is_root() -> bool {
    run(std::process::Command::new("id").arg("-u")).trim() == "0"
}

/// The password account and its password, made (once per process) when running as root;
/// None outside root (after saying so), and a failure under CI.
pub fn password_user() -> Option<(&'static str, String)> {
    static PASSWORD: OnceLock<Option<String>> = OnceLock::new();
    let password = PASSWORD.get_or_init(|| {
        if !is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "the SFTP password tests run as root under CI"
            );
            eprintln!("skipped: SFTP password logins need root (to make a test account)");
            return None;
        }
        let exists = std::process::Command::new("id")
            .arg(PASSWORD_USER)
            .output()
            .unwrap()
            .status
            .success();
        if !exists {
            run(std::process::Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PASSWORD_USER,
            ]));
        }
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let mut child = std::process::Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{PASSWORD_USER}:{password}\n").as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "chpasswd failed");
        Some(password)
    });
    password.clone().map(|p| (PASSWORD_USER, p))
}

/// A running sshd serving SFTP; killed when dropped.
pub struct SftpServer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Its configuration, keys and log; files live under `files/`.
    pub dir: tempfile::TempDir,
    /// The host key's `SHA256:…` fingerprint.
    pub host_fingerprint: String,
    /// A known_hosts file holding the host key for `[127.0.0.1]:port`.
    pub known_hosts: PathBuf,
    /// An Ed25519 private key the server accepts for [`current_user`].
    pub client_key: PathBuf,
    /// An RSA private key the server accepts for [`current_user`].
    pub client_rsa_key: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    _child: tokio::process::Child,
}

impl SftpServer {
    /// Starts sshd; None (after saying why) when it is missing outside CI.
    pub async fn start() -> Option<SftpServer> {
        if !sshd_available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Readable by the password account (it works under files/).
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::create_dir(d.join("files")).unwrap();
        keygen(&d.join("host_ed25519"), "ed25519");
        keygen(&d.join("client_ed25519"), "ed25519");
        keygen(&d.join("client_rsa"), "rsa");
        let mut authorized = std::fs::read_to_string(d.join("client_ed25519.pub")).unwrap();
        authorized.push_str(&std::fs::read_to_string(d.join("client_rsa.pub")).unwrap());
        std::fs::write(d.join("authorized_keys"), authorized).unwrap();
        if is_root() {
            // The privilege separation directory sshd expects when started as root.
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\n\
             HostKey {host_key}\n\
             PidFile none\n\
             UsePAM no\n\
             StrictModes no\n\
             PermitRootLogin yes\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\n\
             AuthorizedKeysFile {authorized}\n\
             Subsystem sftp internal-sftp\n\
             ForceCommand internal-sftp\n\
             LogLevel INFO\n\
             MaxStartups 100\n",
            host_key = d.join("host_ed25519").display(),
            authorized = d.join("authorized_keys").display(),
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let mut child = tokio::process::Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Server listening on")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
                sink.lock().unwrap().push(line);
            }
        });
        if !matches!(
            tokio::time::timeout(Duration::from_secs(20), ready_rx).await,
            Ok(Ok(()))
        ) {
            panic!("sshd did not start: {:?}", log.lock().unwrap());
        }
        let public = std::fs::read_to_string(d.join("host_ed25519.pub")).unwrap();
        let known_hosts = d.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {public}")).unwrap();
        Some(SftpServer {
            port,
            host_fingerprint: fingerprint(&d.join("host_ed25519.pub")),
            known_hosts,
            client_key: d.join("client_ed25519"),
            client_rsa_key: d.join("client_rsa"),
            dir,
            log,
            _child: child,
        })
    }

    /// A path under the served `files/` directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join("files").join(rel)
    }

    /// The location (absolute path on the server) of `rel` under `files/`.
    pub fn location(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    /// Names in a served directory, sorted.
    pub fn names(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// What sshd logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// A connection (JSON, as in a connections file) logging in as the current user with
    /// the Ed25519 key, the host key pinned by fingerprint.
    pub fn key_spec(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "sftp",
            "host": "127.0.0.1",
            "port": self.port,
            "username": current_user(),
            "key_file": self.client_key.display().to_string(),
            "host_key_fingerprint": self.host_fingerprint,
            "timeout_secs": 10,
        })
    }
}
