//! FTP peers for the FTP connector tests: a real server (libunftp over a temporary directory,
//! plain or with explicit FTPS from a throwaway CA made with rcgen), and a tiny scripted
//! responder for what a real server cannot be made to send (hostile names in a listing) and
//! for watching the exact command sequence.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use libunftp::ServerBuilder;
use libunftp::options::ActivePassiveMode;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use unftp_core::auth::{AuthenticationError, Authenticator, Credentials, Principal};
use unftp_sbe_fs::Filesystem;

/// The user the test servers accept.
pub const USER: &str = "ferry";
/// Their password.
pub const PASSWORD: &str = "s3cret pässword";

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it, as PEM files.
pub struct TestPki {
    _dir: tempfile::TempDir,
    /// The CA certificate (what clients trust).
    pub ca_file: PathBuf,
    /// The server's certificate.
    pub cert_file: PathBuf,
    /// The server's private key (PKCS#8).
    pub key_file: PathBuf,
}

impl TestPki {
    /// Makes the CA and the server certificate (SAN IP:127.0.0.1 and DNS:localhost).
    pub fn new() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ferry test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let mut leaf =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "ferry test server");
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &ca).unwrap();

        let ca_file = dir.path().join("ca.pem");
        let cert_file = dir.path().join("server.pem");
        let key_file = dir.path().join("server.key");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(&cert_file, leaf_cert.pem()).unwrap();
        std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
        TestPki {
            _dir: dir,
            ca_file,
            cert_file,
            key_file,
        }
    }
}

/// Accepts [`USER`] with [`PASSWORD`], nobody else.
#[derive(Debug)]
struct OneUser;

#[async_trait]
impl Authenticator for OneUser {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        if username != USER {
            return Err(AuthenticationError::BadUser);
        }
        if creds.password.as_deref() != Some(PASSWORD) {
            return Err(AuthenticationError::BadPassword);
        }
        Ok(Principal {
            username: username.to_string(),
        })
    }
}

/// A real FTP server (libunftp) serving a temporary directory on 127.0.0.1.
pub struct FtpServer {
    /// The control port.
    pub port: u16,
    /// What the server serves.
    pub root: tempfile::TempDir,
}

impl FtpServer {
    /// Starts a plain FTP server, or an FTPS-capable one (explicit `AUTH TLS`) with `pki`.
    pub async fn start(pki: Option<&TestPki>) -> FtpServer {
        let root = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = root.path().to_path_buf();
        let tls = pki.map(|p| (p.cert_file.clone(), p.key_file.clone()));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let dir = dir.clone();
                let mut builder = ServerBuilder::with_authenticator(
                    Box::new(move || Filesystem::new(dir.clone()).unwrap()),
                    Arc::new(OneUser),
                )
                .greeting("ferry test FTP server")
                .passive_ports(42000..=62000)
                .active_passive_mode(ActivePassiveMode::ActiveAndPassive);
                if let Some((cert, key)) = &tls {
                    builder = builder.ftps(cert.clone(), key.clone());
                }
                let server = builder.build().unwrap();
                tokio::spawn(server.service(stream));
            }
        });
        FtpServer { port, root }
    }

    /// A path inside the served directory.
    /// A ferry file store on this server: plain FTP, passive, a 10 s timeout, and
    /// `temp_max_age` for the sweep of stale temporaries (`None`: the default).
    pub fn store(&self, temp_max_age: Option<&str>) -> ferry::connectors::FileStore {
        use ferry::connectors::ftp::{FtpSecurity, FtpSpec, FtpStore};
        let spec = FtpSpec {
            host: "127.0.0.1".into(),
            port: Some(self.port),
            username: USER.into(),
            password_env: "FERRY_TEST_UNUSED".into(),
            security: FtpSecurity::None,
            ca_file: None,
            timeout_secs: Some(10),
            passive: true,
            temp_max_age: temp_max_age.map(str::to_string),
        };
        ferry::connectors::FileStore::Ftp(
            FtpStore::with_password(&spec, ferry::connectors::Secret::new(PASSWORD.into()))
                .unwrap(),
        )
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
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
}

/// What the scripted responder answers to listings.
#[derive(Default, Clone)]
pub struct Script {
    /// The bytes of the `MLSD` data connection; `None` answers `502` (unsupported).
    pub mlsd: Option<Vec<u8>>,
    /// The bytes of the `NLST` data connection.
    pub nlst: Vec<u8>,
    /// `SIZE` answers; other names get `550`.
    pub sizes: HashMap<String, u64>,
}

/// A scripted FTP responder: one session at a time, every command logged.
pub struct FakeFtp {
    /// The control address.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl FakeFtp {
    /// Starts the responder.
    pub async fn start(script: Script) -> FakeFtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                serve(stream, &script, &seen).await;
            }
        });
        FakeFtp { addr, log }
    }

    /// The commands received so far (the password masked).
    pub fn commands(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

async fn serve(stream: tokio::net::TcpStream, script: &Script, log: &Mutex<Vec<String>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut data: Option<TcpListener> = None;
    write.write_all(b"220 scripted\r\n").await.unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let cmd = cmd.to_ascii_uppercase();
        log.lock().unwrap().push(if cmd == "PASS" {
            "PASS ***".to_string()
        } else {
            line.clone()
        });
        let reply: String = match cmd.as_str() {
            "USER" => "331 password please".into(),
            "PASS" => "230 logged in".into(),
            "TYPE" => "200 type set".into(),
            "CWD" => "250 ok".into(),
            "PWD" => "257 \"/\"".into(),
            "QUIT" => {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            }
            "SIZE" => match script.sizes.get(arg) {
                Some(n) => format!("213 {n}"),
                None => "550 no such file".into(),
            },
            "PASV" => {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = l.local_addr().unwrap().port();
                data = Some(l);
                format!(
                    "227 Entering Passive Mode (127,0,0,1,{},{})",
                    port >> 8,
                    port & 0xff
                )
            }
            "MLSD" | "NLST" => {
                let body = if cmd == "MLSD" {
                    script.mlsd.clone()
                } else {
                    Some(script.nlst.clone())
                };
                match (body, data.take()) {
                    (None, _) => "502 MLSD not implemented".into(),
                    (Some(body), Some(l)) => {
                        write.write_all(b"150 here it comes\r\n").await.unwrap();
                        let (mut conn, _) = l.accept().await.unwrap();
                        conn.write_all(&body).await.unwrap();
                        conn.shutdown().await.unwrap();
                        drop(conn);
                        "226 done".into()
                    }
                    (Some(_), None) => "425 use PASV first".into(),
                }
            }
            _ => "502 not implemented".into(),
        };
        if write
            .write_all(format!("{reply}\r\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Writes `len` bytes holding every byte value, CR/LF pairs, lone LFs and lone CRs, in a
/// pattern that does not repeat per chunk.
pub fn binary_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let mut bytes: Vec<u8> = Vec::with_capacity(len);
    bytes.extend((0..=255u8).collect::<Vec<_>>());
    bytes.extend_from_slice(b"line\r\nunix\nmac\r\r\n\n\r");
    let mut i = 0usize;
    while bytes.len() < len {
        bytes.push(((i * 31 + i / 7919) % 256) as u8);
        if i.is_multiple_of(97) {
            bytes.extend_from_slice(b"\r\n");
        }
        if i.is_multiple_of(89) {
            bytes.push(b'\n');
        }
        i += 1;
    }
    bytes.truncate(len);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}
