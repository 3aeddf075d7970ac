//! The mock Maskinporten and a verifying echo upstream on 127.0.0.1, for tests of portvakt built
//! and installed elsewhere (the Debian package in a chroot, the container image): it registers
//! the demo client with scope `nav:example/scope`, writes `peers.env` (ISSUER, UPSTREAM) and the
//! client's key (`client.pem`, kid in `peers.env` as KID, client_id as CLIENT_ID) into the folder
//! it is given, and serves until it is killed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portvakt::cli::demo::{DEMO_CLIENT_ID, DEMO_KID, SUPPLIER_ORG};
use portvakt::keys::SigningKey;
use portvakt::mock::{EchoUpstream, MockClient, MockMaskinporten, DEMO_CLIENT_KEY_PEM};

#[tokio::main]
async fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: mock_peers DIR"));
    let key = SigningKey::from_pem(DEMO_CLIENT_KEY_PEM.as_bytes(), DEMO_KID).unwrap();
    let client = MockClient::new(DEMO_CLIENT_ID, SUPPLIER_ORG)
        .key(&key)
        .scopes(["nav:example/scope"]);
    let mock = MockMaskinporten::start(vec![client], 600).await.unwrap();
    let upstream = EchoUpstream::start(Some(mock.decoding_key()))
        .await
        .unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("client.pem"), DEMO_CLIENT_KEY_PEM).unwrap();
    let env = format!(
        "ISSUER={}\nUPSTREAM={}\nKID={DEMO_KID}\nCLIENT_ID={DEMO_CLIENT_ID}\n",
        mock.issuer(),
        upstream.url()
    );
    // Written last, and whole: its presence says the peers are up.
    std::fs::write(dir.join("peers.env.tmp"), env).unwrap();
    std::fs::rename(dir.join("peers.env.tmp"), dir.join("peers.env")).unwrap();
    std::future::pending::<()>().await;
}
