//! The dashboard with many apps: pages of 100, a summary over all of them, and a self-refresh
//! that stays on its page.

use crate::helpers::*;

#[tokio::test]
async fn many_apps_come_in_pages_with_a_summary_of_all() {
    let app = spawn_with_apps(250).await;
    app.login_as_admin().await;
    // Once the status monitor has looked (their containers do not exist: "Missing").
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let first = loop {
        let page = app.get_html("/admin").await;
        if !page.contains(" checking</span>") || std::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(
        first.matches("<tr data-app=").count(),
        100,
        "100 apps a page"
    );
    assert!(first.contains("data-app=\"app-000\"") || first.contains("data-app=\"app-249\""));
    assert!(
        first.contains("250 apps:") && first.contains("250 missing"),
        "the summary counts every page: {first}"
    );
    assert!(first.contains("Page 1 of 3") && first.contains("href=\"/admin?page=2\""));
    assert!(
        first.len() < 100 * 1024,
        "a page stays under 100 KiB: {} bytes",
        first.len()
    );
    let last = app.get_html("/admin?page=3").await;
    assert_eq!(last.matches("<tr data-app=").count(), 50);
    assert!(
        last.contains("data-refresh=\"/admin/apps/rows?page=3\""),
        "the refresh stays on page 3"
    );
    let rows = app.get_html("/admin/apps/rows?page=3").await;
    assert_eq!(rows.matches("<tr data-app=").count(), 50);
    let beyond = app.get_html("/admin?page=99").await;
    assert!(
        beyond.contains("Page 3 of 3"),
        "a page past the end shows the last"
    );
}
