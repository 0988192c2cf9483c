//! nsqadmin's HTTPS client options (`--http-client-tls-root-ca-file`, `--http-client-tls-cert`
//! / `--http-client-tls-key`, `--http-client-tls-insecure-skip-verify`) against an nsqd that
//! serves its API only over `--https-address` with `--tls-client-auth-policy=require-verify`:
//! with the CA and a client certificate nsqadmin reads the node; without the CA (and without
//! skip-verify) it refuses the node's certificate; without a client certificate nsqd refuses
//! nsqadmin. Certificates are made in the test with the openssl CLI: a CA, a server
//! certificate for 127.0.0.1/localhost and a client certificate, both signed by the CA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nsq_blackbox_tests::{Nsqadmin, Nsqd};

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl (install the openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA and two leaf certificates it signs: `name` with the given extensions.
fn leaf(dir: &Path, name: &str, subject: &str, ext: &str) -> (PathBuf, PathBuf) {
    let (key, csr, cert, extfile) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.csr")),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.ext")),
    );
    std::fs::write(&extfile, ext).unwrap();
    let p = |x: &PathBuf| x.to_str().unwrap().to_string();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        subject,
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&dir.join("ca.pem")),
        "-CAkey",
        &p(&dir.join("ca.key")),
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        &p(&extfile),
        "-out",
        &p(&cert),
    ]);
    (cert, key)
}

fn make_pki(dir: &Path) -> Pki {
    let ca = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    std::fs::write(
        dir.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=nsq-rs test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        ca_key.to_str().unwrap(),
        "-out",
        ca.to_str().unwrap(),
    ]);
    let (server_cert, server_key) = leaf(
        dir,
        "server",
        "/CN=localhost",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    );
    let (client_cert, client_key) = leaf(
        dir,
        "client",
        "/CN=nsqadmin",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=clientAuth\n",
    );
    Pki {
        ca,
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

/// nsqadmin over the nsqd's HTTPS address with `tls_args`; its `/api/topics/secure` answer.
fn admin_view(n: &Nsqd, tls_args: &[String]) -> (u16, serde_json::Value) {
    let mut args = vec![
        format!("--nsqd-http-address=https://localhost:{}", n.https.port()),
        "--http-client-connect-timeout=2s".to_string(),
        "--http-client-request-timeout=5s".to_string(),
    ];
    args.extend(tls_args.iter().cloned());
    let admin = Nsqadmin::start(&args).unwrap();
    let (st, body) = nsq_blackbox_tests::http_get(admin.http, "/api/topics/secure").unwrap();
    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (st, v)
}

#[test]
fn http_client_tls_options_against_require_verify_nsqd() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let n = Nsqd::start(&[
        &format!("--tls-cert={}", pki.server_cert.display()),
        &format!("--tls-key={}", pki.server_key.display()),
        &format!("--tls-root-ca-file={}", pki.ca.display()),
        "--tls-client-auth-policy=require-verify",
        // TLS on TCP and HTTPS; plain HTTP stays open for the harness's readiness check
        // (a client auth policy alone would refuse it, as NSQ does).
        "--tls-required=tcp-https",
    ])
    .unwrap();

    // Publish over HTTPS with the client certificate, verifying nsqd against the CA.
    let mut identity = std::fs::read(&pki.client_cert).unwrap();
    identity.extend(std::fs::read(&pki.client_key).unwrap());
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap(),
        )
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for i in 0..3 {
        let r = client
            .post(format!(
                "https://localhost:{}/pub?topic=secure",
                n.https.port()
            ))
            .body(format!("m{i}"))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let ca = format!("--http-client-tls-root-ca-file={}", pki.ca.display());
    let cert = format!("--http-client-tls-cert={}", pki.client_cert.display());
    let key = format!("--http-client-tls-key={}", pki.client_key.display());

    // Root CA + client certificate: nsqadmin reads the node.
    let (st, v) = admin_view(&n, &[ca.clone(), cert.clone(), key.clone()]);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["depth"], 3, "{v}");
    assert_eq!(v["message_count"], 3, "{v}");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(1), "{v}");

    // Skip-verify instead of the CA (the client certificate still given): served too.
    let (st, v) = admin_view(
        &n,
        &[
            "--http-client-tls-insecure-skip-verify".to_string(),
            cert.clone(),
            key.clone(),
        ],
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["depth"], 3, "{v}");

    // Neither CA nor skip-verify: nsqadmin does not trust nsqd's certificate.
    let (st, v) = admin_view(&n, &[cert.clone(), key.clone()]);
    let served = st == 200 && v["depth"] == 3;
    assert!(!served, "an unverified nsqd certificate was accepted: {v}");

    // The CA but no client certificate: nsqd (require-verify) refuses nsqadmin.
    let (st, v) = admin_view(&n, &[ca]);
    let served = st == 200 && v["depth"] == 3;
    assert!(
        !served,
        "nsqd served nsqadmin without a client certificate: {v}"
    );
}
