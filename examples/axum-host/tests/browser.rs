//! The chat page in a real browser (headless Chromium over WebDriver) against the real host:
//! a turn streamed and rendered as markdown, a reload mid-stream, a stop, a second
//! conversation, a reset, a keyed server, and errors when the server is gone or the key wrong;
//! and the headers the page and its assets are served with.

#[path = "common/chromium.rs"]
mod chromium;
mod common;

use std::time::Duration;

use chromium::Browser;
use common::{Data, Host, Store, test_config};
use fantoccini::Locator;
use serde_json::json;

const SHIFT: char = '\u{E008}';
const ENTER: char = '\u{E007}';
/// Releases the modifier keys pressed so far.
const RELEASE: char = '\u{E000}';
const TAB: char = '\u{E004}';
const CONTROL: char = '\u{E009}';

/// Words slow enough that a reload lands mid-answer (about 50 words: 7.5 s).
const WORD_DELAY: Duration = Duration::from_millis(150);

/// How many times `needle` occurs in the conversation's rendered text.
async fn shown(browser: &Browser, needle: &str) -> usize {
    browser.text("#log").await.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_chats_reloads_mid_stream_stops_switches_and_resets() {
    let data = Data::new(Store::File).await;
    let mut config = test_config(&data, None);
    config.demo_word_delay = WORD_DELAY;
    let host = Host::start(config).await;
    let browser = Browser::start(1200, 800).await;
    browser
        .client
        .goto(&host.base)
        .await
        .expect("the page opens");
    browser
        .wait_until(
            "the empty conversation",
            "return document.querySelector('#log p.muted')",
        )
        .await;

    // A two-line message (Shift+Enter breaks the line, Enter sends), with markdown and HTML.
    let filler: Vec<String> = (1..=30).map(|n| format!("w{n:02}")).collect();
    let second_line = format!(
        "Please render **bold words** and `inline code` but not <b>raw html</b> {}",
        filler.join(" ")
    );
    let keys = format!("Hello there{SHIFT}{ENTER}{RELEASE}{second_line}{ENTER}");
    browser.type_into("#text", &keys).await;
    browser
        .wait_until(
            "the answer streams in",
            "return document.querySelector('#log .msg.assistant.working')?.innerText.includes('You said:')",
        )
        .await;
    assert_eq!(
        browser.text("#log .msg.user").await,
        format!("Hello there\n{second_line}"),
        "the message is shown as typed, on two lines"
    );
    assert_eq!(browser.text("#text").await, "", "the input is cleared");

    // Reload while the answer streams: the page reattaches to the run and replays it.
    browser.client.refresh().await.expect("reload");
    let resumed = browser
        .wait_until(
            "the run is followed again after the reload",
            "const bubble = [...document.querySelectorAll('#log .msg.assistant')]
               .find((b) => b.innerText.includes('You said:'));
             return bubble && { working: bubble.classList.contains('working') }",
        )
        .await;
    assert_eq!(
        resumed,
        json!({"working": true}),
        "the reload came mid-stream"
    );
    assert_eq!(
        shown(&browser, "You said:").await,
        1,
        "replayed text shown once"
    );
    browser
        .wait_until(
            "the answer completes",
            "return !document.querySelector('.working') && document.querySelector('#log').innerText.includes('(turn 1)')",
        )
        .await;
    assert_eq!(
        shown(&browser, "You said:").await,
        1,
        "the answer appears once"
    );
    assert_eq!(shown(&browser, "(turn 1)").await, 1);
    assert_eq!(
        shown(&browser, "w30").await,
        2,
        "in the message and its answer"
    );

    // Markdown rendered, raw HTML from the model shown as text, never as markup.
    let rendered = browser
        .client
        .execute(
            "const a = document.querySelector('#log .msg.assistant');
             return { strong: a.querySelector('strong')?.textContent,
                      code: a.querySelector('code')?.textContent,
                      markup: a.querySelectorAll('b, script').length,
                      shownAsText: a.innerText.includes('<b>raw html</b>'),
                      usage: a.querySelector('.usage')?.textContent,
                      pending: localStorage.getItem('lobu.runs') }",
            Vec::new(),
        )
        .await
        .expect("read the answer");
    assert_eq!(rendered["strong"], "bold words", "{rendered}");
    assert_eq!(rendered["code"], "inline code", "{rendered}");
    assert_eq!(rendered["markup"], 0, "{rendered}");
    assert_eq!(rendered["shownAsText"], true, "{rendered}");
    let usage = rendered["usage"].as_str().unwrap_or_default();
    assert!(
        usage.contains("tokens in") && usage.contains("out"),
        "{rendered}"
    );
    assert_eq!(rendered["pending"], "[]", "nothing left to resume");
    browser
        .wait_until(
            "the list shows the conversation",
            "const items = document.querySelectorAll('#conversations li');
             return items.length === 1 && items[0].classList.contains('current')
               && items[0].innerText.includes('1 turn ')",
        )
        .await;

    // A second conversation: a long turn stopped, then a turn answered.
    browser.click("#new").await;
    browser
        .wait_until(
            "a new, empty conversation",
            "return document.querySelectorAll('#conversations li').length === 2
               && document.querySelector('#log p.muted')",
        )
        .await;
    browser
        .type_into("#text", &format!("/sleep 60000{ENTER}"))
        .await;
    browser
        .wait_until(
            "a stop button while the turn runs",
            "return !document.querySelector('#stop').hidden",
        )
        .await;
    browser.click("#stop").await;
    browser
        .wait_until(
            "the run shows it was stopped",
            "return document.querySelector('#log .run-error')?.innerText.startsWith('stopped')
               && document.querySelector('#stop').hidden",
        )
        .await;
    browser
        .type_into("#text", &format!("second conversation{ENTER}"))
        .await;
    browser
        .wait_until(
            "the second conversation's answer",
            "return !document.querySelector('.working')
               && document.querySelector('#log').innerText.includes('You said: second conversation')",
        )
        .await;
    browser
        .wait_until(
            "both conversations listed",
            "const items = [...document.querySelectorAll('#conversations li')];
             return items.length === 2 && items.every((li) => li.innerText.includes('1 turn '))",
        )
        .await;
    let screenshot = browser.screenshot("chat").await;
    assert!(screenshot.exists());

    // Reset empties it; the first conversation is still there.
    browser.click("#reset").await;
    browser
        .client
        .accept_alert()
        .await
        .expect("the reset is confirmed");
    browser
        .wait_until(
            "the reset conversation is empty",
            "return document.querySelector('#log p.muted')",
        )
        .await;
    let first = browser
        .client
        .find(Locator::XPath(
            "//ul[@id='conversations']/li[contains(., 'Hello there')]",
        ))
        .await
        .expect("the first conversation in the list");
    first.click().await.expect("switch");
    browser
        .wait_until(
            "the first conversation again",
            "return document.querySelector('#log').innerText.includes('(turn 1)')",
        )
        .await;
    assert_eq!(shown(&browser, "You said:").await, 1);

    // The server goes away: sending says so.
    host.stop().await;
    browser
        .type_into("#text", &format!("anyone there?{ENTER}"))
        .await;
    browser
        .wait_until(
            "an error naming the unreachable server",
            "return document.querySelector('#errors .error')?.innerText.includes('cannot reach the server')",
        )
        .await;
    browser.screenshot("server-gone").await;
    browser.close().await;
    data.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_server_is_used_with_its_key_and_refuses_a_wrong_one() {
    let data = Data::new(Store::File).await;
    let host = Host::start(test_config(&data, Some("good-key=acme"))).await;
    let browser = Browser::start(1000, 700).await;
    browser
        .client
        .goto(&host.base)
        .await
        .expect("the page opens");
    browser
        .wait_until(
            "without a key, the refusal is shown",
            "return document.querySelector('#errors .error')?.innerText.includes('401')",
        )
        .await;

    browser.type_into("#key", &format!("good-key{TAB}")).await;
    browser
        .wait_until(
            "with the key, the list loads and the errors go",
            "return document.querySelector('#list-state').innerText === 'No conversations yet.'
               && !document.querySelector('#errors .error')",
        )
        .await;
    browser
        .type_into("#text", &format!("hello with a key{ENTER}"))
        .await;
    browser
        .wait_until(
            "the answer streams over the keyed event route",
            "return !document.querySelector('.working')
               && document.querySelector('#log').innerText.includes('You said: hello with a key')",
        )
        .await;

    // Select the key, type another over it.
    browser
        .type_into("#key", &format!("{CONTROL}a{RELEASE}wrong-key{TAB}"))
        .await;
    browser
        .wait_until(
            "a wrong key is refused, visibly",
            "return document.querySelector('#errors .error')?.innerText.includes('401')",
        )
        .await;
    browser.close().await;
    host.stop().await;
    data.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_carry_their_types_and_a_strict_policy() {
    let data = Data::new(Store::File).await;
    let host = Host::start(test_config(&data, Some("good-key=acme"))).await;
    let api = host.api();
    for (route, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/page/app.js", "text/javascript; charset=utf-8"),
        ("/page/api.js", "text/javascript; charset=utf-8"),
        ("/page/render.js", "text/javascript; charset=utf-8"),
        ("/page/style.css", "text/css; charset=utf-8"),
        (
            "/page/vendor/markdown-it.min.js",
            "text/javascript; charset=utf-8",
        ),
        ("/page/vendor/LICENSE", "text/plain; charset=utf-8"),
    ] {
        // No key: the page must load before the person can type one.
        let response = api
            .request(reqwest::Method::GET, route)
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{route}");
        let header = |name: &str| {
            response.headers()[name]
                .to_str()
                .expect("a text header")
                .to_owned()
        };
        assert_eq!(header("content-type"), content_type, "{route}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{route}");
        let policy = header("content-security-policy");
        assert!(
            policy.starts_with("default-src 'none'; script-src 'self';")
                && !policy.contains("unsafe"),
            "{route}: {policy}"
        );
    }
    host.stop().await;
    data.cleanup().await;
}
