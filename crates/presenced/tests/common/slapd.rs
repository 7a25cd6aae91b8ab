//! A throwaway OpenLDAP server for the directory tests: slapd on a free loopback
//! port, its database seeded with slapadd, configured so that searches of more than
//! 500 entries need the paged-results control.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BASE_DN: &str = "dc=example,dc=com";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=com";
pub const ROOT_PW: &str = "root-secret";
pub const READER_DN: &str = "cn=reader,dc=example,dc=com";
pub const READER_PW: &str = "reader-secret";
const SCHEMA: &str = include_str!("../fixtures/ocs.schema");

pub struct Slapd {
    child: Option<Child>,
    pub port: u16,
    /// The LDAPS port, when started with TLS.
    pub tls_port: Option<u16>,
    pub dir: tempfile::TempDir,
}

/// Makes a test CA (`ca.pem`) and a server certificate for 127.0.0.1 (`server.pem`,
/// `server.key`) in `d` with openssl.
pub fn make_certificates(d: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Presenced Test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The LDIF of a directory with `n` users `user0..` plus the named ones.
pub fn seed(n: usize, named: &[(&str, &str, &str)]) -> String {
    let mut s = format!(
        "dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: ou=people,{BASE_DN}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: {READER_DN}\nobjectClass: person\ncn: reader\nsn: reader\nuserPassword: {READER_PW}\n\n"
    );
    let person = |uid: &str, name: &str, password: Option<&str>, s: &mut String| {
        s.push_str(&format!(
            "dn: uid={uid},ou=people,{BASE_DN}\nobjectClass: inetOrgPerson\nobjectClass: msRTCSIPUser\n\
             uid: {uid}\ncn: {name}\nsn: {uid}\ndisplayName: {name}\nmail: {uid}@example.com\n\
             title: Engineer\ndepartment: R&D\ncompany: Example\ntelephoneNumber: +1 425 555 0100\n\
             msRTCSIP-PrimaryUserAddress: sip:{uid}@example.com\nmsRTCSIP-UserEnabled: TRUE\n"
        ));
        if let Some(p) = password {
            s.push_str(&format!("userPassword: {p}\n"));
        }
        s.push('\n');
    };
    for (uid, name, pw) in named {
        person(uid, name, Some(pw), &mut s);
    }
    for i in 0..n {
        person(&format!("user{i}"), &format!("User {i}"), None, &mut s);
    }
    s
}

impl Slapd {
    pub fn start(seed_ldif: &str) -> Slapd {
        Self::start_with(seed_ldif, false)
    }

    /// Also listens for LDAPS and accepts StartTLS, with a certificate from a test CA
    /// (`ca_file()`).
    pub fn start_tls(seed_ldif: &str) -> Slapd {
        Self::start_with(seed_ldif, true)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn ldaps_url(&self) -> String {
        format!(
            "ldaps://127.0.0.1:{}",
            self.tls_port.expect("started with TLS")
        )
    }

    fn start_with(seed_ldif: &str, tls: bool) -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let tls_conf = if tls {
            make_certificates(d);
            format!(
                "TLSCACertificateFile {d}/ca.pem\nTLSCertificateFile {d}/server.pem\nTLSCertificateKeyFile {d}/server.key\n",
                d = d.display()
            )
        } else {
            String::new()
        };
        std::fs::create_dir(d.join("db")).unwrap();
        std::fs::write(d.join("ocs.schema"), SCHEMA).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include {schema}\n\
             {tls_conf}\
             pidfile {pid}\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             sizelimit size.soft=500 size.hard=500 size.pr=500 size.prtotal=unlimited\n\
             database mdb\n\
             maxsize 1073741824\n\
             suffix \"{BASE_DN}\"\n\
             rootdn \"{ROOT_DN}\"\n\
             rootpw {ROOT_PW}\n\
             directory {db}\n\
             index objectClass eq\n\
             access to attrs=userPassword by anonymous auth by self write by * none\n\
             access to * by * read\n",
            schema = d.join("ocs.schema").display(),
            pid = d.join("slapd.pid").display(),
            db = d.join("db").display(),
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        let mut add = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-q")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("slapadd (Debian package slapd)");
        add.stdin
            .take()
            .unwrap()
            .write_all(seed_ldif.as_bytes())
            .unwrap();
        let out = add.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = Slapd {
            child: None,
            port: free_port(),
            tls_port: tls.then(free_port),
            dir,
        };
        s.run();
        s
    }

    fn run(&mut self) {
        let mut listen = format!("ldap://127.0.0.1:{}/", self.port);
        if let Some(p) = self.tls_port {
            listen.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
        }
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(listen)
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "slapd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Applies an LDIF change with ldapmodify (as the directory's root).
    pub fn modify(&self, ldif: &str) {
        let mut c = Command::new("ldapmodify")
            .args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ldapmodify (Debian package ldap-utils)");
        c.stdin.take().unwrap().write_all(ldif.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ldapmodify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A presenced configuration file syncing from this server.
    pub fn config(&self, extra: &str, bind_pw: &str) -> PathBuf {
        self.config_for(&self.url(), extra, bind_pw, "")
    }

    /// A configuration for `url` with extra `[directory.ldap]` lines.
    pub fn config_for(&self, url: &str, extra: &str, bind_pw: &str, ldap_extra: &str) -> PathBuf {
        let path = self.dir.path().join("presenced.toml");
        std::fs::write(
            &path,
            format!(
                "{extra}\n[directory]\nsource = \"ldap\"\nsync_interval = 1\n\n[directory.ldap]\n\
                 url = \"{url}\"\nbind_dn = \"{READER_DN}\"\nbind_password = \"{bind_pw}\"\n\
                 base_dn = \"ou=people,{BASE_DN}\"\npage_size = 200\ntimeout_secs = 5\n{ldap_extra}\n"
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
