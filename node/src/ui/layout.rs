//! The page shell every UI page shares: head (our CSS only), the top bar with navigation and the session,
//! and small pieces used across pages (status badge, times, durations).
use super::session::Session;
use jobserv_protocol::RunStatus;
use maud::{html, Markup, DOCTYPE};

/// A whole page. `session` is `None` on the login page.
pub fn page(title: &str, session: Option<(&Session, &str)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · JobServ" }
                link rel="stylesheet" href="/ui/static/app.css";
            }
            body {
                header.top {
                    a.brand href="/ui/" { "JobServ" }
                    @if session.is_some() {
                        a href="/ui/" { "Projects" }
                        a href="/ui/workers/" { "Workers" }
                        a href="/ui/queue/" { "Queue" }
                        a href="/ui/cluster/" { "Cluster" }
                    }
                    @if let Some((s, csrf)) = session {
                        span.who {
                            span { (s.token_name) " (" (if s.is_admin() { "admin" } else { "viewer" }) ")" }
                            form method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
                script src="/ui/static/app.js" defer {}
            }
        }
    }
}

pub fn status(s: RunStatus) -> Markup {
    html! { span class={ "badge s-" (s.as_str()) } { (s.as_str()) } }
}

/// `YYYY-MM-DD HH:MM:SS` UTC of a millisecond timestamp.
pub fn time(ms: u64) -> String {
    jobserv_protocol::time::utc_text(ms)
}

/// `1h 2m`, `3m 4s`, `5s`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

/// Age of `ms` relative to now, e.g. `3m 4s ago`.
pub fn age(ms: u64) -> String {
    let now = jobserv_raft::state::now_ms();
    format!("{} ago", duration(now.saturating_sub(ms)))
}

/// Duration of something that started at `start` and ended at `end` (or is still going).
pub fn took(start: Option<u64>, end: Option<u64>) -> String {
    match (start, end) {
        (Some(s), Some(e)) => duration(e.saturating_sub(s)),
        (Some(s), None) => format!(
            "{} so far",
            duration(jobserv_raft::state::now_ms().saturating_sub(s))
        ),
        _ => "-".into(),
    }
}

/// URL-path segment escaping (names are restricted, but never trust that in a URL).
pub fn seg(s: &str) -> String {
    urlencoding::encode(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times() {
        assert_eq!(duration(5_400), "5s");
        assert_eq!(duration(184_000), "3m 4s");
        assert_eq!(duration(3_720_000), "1h 2m");
        assert_eq!(time(1_709_210_096_000), "2024-02-29 12:34:56");
    }

    #[test]
    fn text_is_escaped() {
        let html = page("<x>", None, maud::html! { p { "<script>" } }).into_string();
        assert!(!html.contains("<script>\"") && html.contains("&lt;script&gt;"));
        assert!(html.contains("&lt;x&gt;"));
    }
}
