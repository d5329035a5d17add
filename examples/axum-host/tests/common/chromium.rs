//! Headless Chromium for the browser tests: chromedriver on a free port, one WebDriver
//! session through fantoccini, and waits on what the page shows. Missing Chromium or
//! chromedriver fails the test (never skips it).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use crate::common::PATIENCE;

const INSTALL_HINT: &str = "the browser test needs Chromium and chromedriver: run .ci/run, \
    or `apt-get install -y chromium chromium-driver` (or set CHROMIUM and CHROMEDRIVER to them)";

/// A chromedriver process and a browser session on it; dropping it ends both.
#[derive(Debug)]
pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: Child,
}

/// `$var` if set, else the first of `candidates` that exists; panics with the install hint.
fn program(var: &str, candidates: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("{} not found; {INSTALL_HINT}", candidates[0]))
}

impl Browser {
    /// Start chromedriver and a headless Chromium of `width`×`height`.
    pub(crate) async fn start(width: u32, height: u32) -> Browser {
        let chromium = program(
            "CHROMIUM",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        );
        let chromedriver = program("CHROMEDRIVER", &["/usr/bin/chromedriver"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; {INSTALL_HINT}",
                    chromedriver.display()
                )
            });
        let mut browser_driver = DriverGuard(Some(driver));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        // chromedriver takes a moment to listen.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver never listened on port {port}; {INSTALL_HINT}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("Chromium did not start: {e}; {INSTALL_HINT}"));
        Browser {
            client,
            driver: browser_driver.0.take().expect("the driver"),
        }
    }

    /// Wait until `script` (a function body returning a value) returns something truthy;
    /// returns it. Panics with `what` and the page's text after the patience.
    pub(crate) async fn wait_until(&self, what: &str, script: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let value = self
                .client
                .execute(script, Vec::new())
                .await
                .unwrap_or_else(|e| panic!("{what}: script failed: {e}"));
            let truthy = match &value {
                serde_json::Value::Null | serde_json::Value::Bool(false) => false,
                serde_json::Value::String(s) => !s.is_empty(),
                serde_json::Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("never: {what}\npage text:\n{}", self.text("body").await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of the first element matching `css`, as rendered (`innerText`).
    pub(crate) async fn text(&self, css: &str) -> String {
        let script = format!(
            "return document.querySelector({})?.innerText ?? ''",
            json!(css)
        );
        match self.client.execute(&script, Vec::new()).await {
            Ok(serde_json::Value::String(text)) => text,
            other => panic!("reading {css}: {other:?}"),
        }
    }

    /// Click the element matching `css`.
    pub(crate) async fn click(&self, css: &str) {
        let element = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Type `keys` (WebDriver key codes allowed) into the element matching `css`.
    pub(crate) async fn type_into(&self, css: &str, keys: &str) {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        element
            .send_keys(keys)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Save a screenshot of the page under the target dir; returns its path.
    pub(crate) async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
        std::fs::create_dir_all(&dir).expect("the screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("the screenshot written");
        println!("screenshot: {}", path.display());
        path
    }

    /// End the session, then chromedriver.
    pub(crate) async fn close(mut self) {
        self.client.clone().close().await.ok();
        self.driver.kill().ok();
        self.driver.wait().ok();
    }
}

/// Kills chromedriver if the session never started.
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test still ends its chromedriver (and with it, the browser).
        self.driver.kill().ok();
        self.driver.wait().ok();
    }
}
