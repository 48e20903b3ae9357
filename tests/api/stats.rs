//! Resource charts: the engine's stats of a running app, sampled in the background and drawn
//! on its page as inline SVG.

use std::time::{Duration, Instant};

use crate::docker_env::*;
use crate::helpers::*;

#[tokio::test]
async fn an_apps_page_charts_its_memory_and_cpu() {
    let app = spawn_engine_app().await;
    let (id, _) = app.deploy("charted", "/charted", web_app_zip("hi")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = unescape(&app.get_html(&format!("/admin/apps/{id}")).await);
        if page.matches("<polyline").count() == 2 {
            break page;
        }
        assert!(Instant::now() < deadline, "no chart after 30 s:\n{page}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The figures are the engine's: some memory in use, under the 512 MiB limit.
    let label_start = page
        .find("aria-label=\"Memory, last hour: ")
        .expect("memory chart");
    let label = &page[label_start..page[label_start..].find("\">").unwrap() + label_start];
    assert!(
        label.contains("MiB now") && label.contains("limit 512 MiB"),
        "{label}"
    );
    let used: f64 = label
        .trim_start_matches("aria-label=\"Memory, last hour: ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(used > 0.0 && used < 512.0, "{used} MiB");
    assert!(page.contains("aria-label=\"CPU, last hour: "), "{page}");
}
