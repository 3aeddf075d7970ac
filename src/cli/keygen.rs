//! `portvakt keygen`: an RSA key pair for a Maskinporten client, in the forms Samarbeidsportalen
//! takes (the public JWK set) and portvakt reads (private JWK, its base64 form, PKCS#8 PEM).

use crate::keys::{self, SecretValue};
use crate::support::secret::Secret;
use anyhow::{bail, Context as _};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Which Maskinporten environment the key is for; it goes into the kid, as Altinn's tool names keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Env {
    Test,
    Prod,
}

impl Env {
    fn label(self) -> &'static str {
        match self {
            Env::Test => "TEST",
            Env::Prod => "PROD",
        }
    }
    fn portal(self) -> &'static str {
        match self {
            Env::Test => "https://sjolvbetjening.test.samarbeid.digdir.no",
            Env::Prod => "https://sjolvbetjening.samarbeid.digdir.no",
        }
    }
}

/// The files keygen wrote.
#[derive(Debug)]
pub struct Written {
    pub kid: String,
    pub public_jwks: PathBuf,
    pub private_jwk: PathBuf,
    pub private_jwk_base64: PathBuf,
    pub private_pem: PathBuf,
}

/// Where `keygen --pkcs11` makes the key: an HSM token.
pub struct InToken {
    pub module: PathBuf,
    pub token: String,
    /// `CKA_LABEL` of the new pair; the kid when not given.
    pub label: Option<String>,
    pub pin_file: Option<PathBuf>,
    pub pin: Option<Secret<String>>,
}

/// Makes the key pair inside the token and writes only its public JWK set into `out`; returns the
/// next steps to print.
pub fn run_in_token(
    name: &str,
    env: Env,
    bits: usize,
    out: &Path,
    today_unix: i64,
    hsm: InToken,
) -> anyhow::Result<((), String)> {
    let kid = kid(name, env, today_unix)?;
    let label = hsm.label.clone().unwrap_or_else(|| kid.clone());
    let pin = match (&hsm.pin_file, hsm.pin) {
        (Some(file), _) => SecretValue::File(file.clone()).read()?,
        (None, Some(pin)) => pin,
        (None, None) => bail!("the token's PIN is needed: give --pin-file or set PORTVAKT_HSM_PIN"),
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let public_jwks = out.join(format!("{kid}.public.jwks.json"));
    if public_jwks.exists() {
        bail!(
            "{} exists already: keygen never overwrites a key",
            public_jwks.display()
        );
    }
    let made = keys::pkcs11::generate(&hsm.module, &hsm.token, pin, &label, bits, &kid)?;
    let public = serde_json::to_string_pretty(&made.public_jwks)?;
    write_file(&public_jwks, format!("{public}\n").as_bytes(), false)?;
    let expires = crate::support::time::date(
        today_unix + keys::client_key::REGISTERED_KEY_LIFETIME.as_secs() as i64,
    );
    let mut next = String::new();
    let _ = writeln!(
        next,
        "Generated RSA {bits} key {kid} inside token `{}` (label `{label}`, not extractable)",
        hsm.token
    );
    let _ = writeln!(
        next,
        "  public JWK set (upload this): {}",
        public_jwks.display()
    );
    let _ = writeln!(next, "{public}");
    let _ = writeln!(next);
    let _ = writeln!(next, "Next:");
    let _ = writeln!(
        next,
        "  1. In Samarbeidsportalen ({}), add this public JWK set to the Maskinporten client.",
        env.portal()
    );
    let _ = writeln!(next, "  2. Give portvakt the key:");
    let _ = writeln!(next, "       key:\n         pkcs11: {{ module: {}, token: {}, key: {label}, pin_file: /secrets/hsm-pin }}\n         kid: {kid}", hsm.module.display(), hsm.token);
    let _ = writeln!(next, "  3. Run `portvakt check --config FILE`, then `portvakt token --config FILE --route NAME`.");
    let _ = writeln!(next, "  Maskinporten removes a registered key a year after upload: replace this one before {expires}.");
    Ok(((), next))
}

/// The kid `NAME-ENV.YYYY-MM-DD`, as Altinn's tool names keys.
fn kid(name: &str, env: Env, today_unix: i64) -> anyhow::Result<String> {
    if name.is_empty() || !crate::keys::in_kid_alphabet(name) {
        bail!("the name `{name}` may hold only letters, digits, `.`, `_` and `-` (it becomes part of the kid)");
    }
    Ok(format!(
        "{name}-{}.{}",
        env.label(),
        crate::support::time::date(today_unix)
    ))
}

/// Generates the key and writes its four files into `out`; private files get mode 0600 and no file
/// is overwritten. Returns what was written and the next steps to print.
pub fn run(
    name: &str,
    env: Env,
    bits: usize,
    out: &Path,
    today_unix: i64,
) -> anyhow::Result<(Written, String)> {
    let kid = kid(name, env, today_unix)?;
    let key = keys::generate(bits, &kid)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let written = Written {
        public_jwks: out.join(format!("{kid}.public.jwks.json")),
        private_jwk: out.join(format!("{kid}.private.jwk.json")),
        private_jwk_base64: out.join(format!("{kid}.private.jwk.b64")),
        private_pem: out.join(format!("{kid}.private.pem")),
        kid: kid.clone(),
    };
    for path in [
        &written.public_jwks,
        &written.private_jwk,
        &written.private_jwk_base64,
        &written.private_pem,
    ] {
        if path.exists() {
            bail!(
                "{} exists already: keygen never overwrites a key",
                path.display()
            );
        }
    }
    let public = serde_json::to_string_pretty(&key.public_jwks)?;
    write_file(&written.public_jwks, public.as_bytes(), false)?;
    let private = serde_json::to_string_pretty(key.private_jwk.expose())?;
    write_file(&written.private_jwk, private.as_bytes(), true)?;
    write_file(
        &written.private_jwk_base64,
        format!("{}\n", key.private_jwk_base64.expose()).as_bytes(),
        true,
    )?;
    write_file(
        &written.private_pem,
        key.pkcs8_pem.expose().as_bytes(),
        true,
    )?;

    let next = next_steps(&written, env, bits, today_unix);
    Ok((written, next))
}

/// What keygen prints: the files written, and how to register and use the key.
fn next_steps(written: &Written, env: Env, bits: usize, today_unix: i64) -> String {
    let expires = crate::support::time::date(
        today_unix + keys::client_key::REGISTERED_KEY_LIFETIME.as_secs() as i64,
    );
    let mut next = String::new();
    let kid = &written.kid;
    let _ = writeln!(next, "Generated RSA {bits} key {kid}");
    let _ = writeln!(
        next,
        "  public JWK set (upload this):   {}",
        written.public_jwks.display()
    );
    let _ = writeln!(
        next,
        "  private JWK (0600):              {}",
        written.private_jwk.display()
    );
    let _ = writeln!(
        next,
        "  private JWK, base64 (0600):      {}",
        written.private_jwk_base64.display()
    );
    let _ = writeln!(
        next,
        "  private key, PKCS#8 PEM (0600):  {}",
        written.private_pem.display()
    );
    let _ = writeln!(next);
    let _ = writeln!(next, "Next:");
    let _ = writeln!(
        next,
        "  1. In Samarbeidsportalen ({}), open the Maskinporten client and add",
        env.portal()
    );
    let _ = writeln!(
        next,
        "     the key from {} (or paste its contents).",
        written.public_jwks.display()
    );
    let _ = writeln!(next, "  2. Give portvakt the private key, one of:");
    let _ = writeln!(next, "       key: {{ jwk_base64_file: /secrets/{kid}.private.jwk.b64 }}   # a Kubernetes secret or Key Vault value");
    let _ = writeln!(
        next,
        "       key: {{ jwk: /secrets/{kid}.private.jwk.json }}"
    );
    let _ = writeln!(
        next,
        "       key: {{ pem: /secrets/{kid}.private.pem, kid: {kid} }}"
    );
    let _ = writeln!(next, "     When replacing a key, register the new one first: portvakt picks up the changed file by itself.");
    let _ = writeln!(next, "  3. Run `portvakt check --config FILE`, then `portvakt token --config FILE --route NAME`.");
    let _ = writeln!(next, "  Maskinporten removes a registered key a year after upload: replace this one before {expires}.");
    let _ = writeln!(
        next,
        "  Keep the private files out of version control; delete copies you no longer need."
    );
    next
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
